# RouteAQ: every command makes its own virtualenv from the lock file.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export ROUTEAQ_HOME ?= $(CURDIR)/.routeaq
export DAGSTER_HOME ?= $(ROUTEAQ_HOME)/dagster
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install instance demo demo-drift test test-fast serve dev evaluate bench clean

$(BIN)/.installed: requirements.lock pyproject.toml
	@echo "==> creating $(VENV) and installing the locked dependencies"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==0.13.9
	$(BIN)/uv pip sync --quiet --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $@

install: $(BIN)/.installed

# The embedded Dagster instance lives under ROUTEAQ_HOME with this repository's dagster.yaml.
instance:
	mkdir -p $(DAGSTER_HOME)
	ln -sf $(CURDIR)/dagster.yaml $(DAGSTER_HOME)/dagster.yaml

demo: install instance
	$(BIN)/python -m routeaq_assets.demo

# The whole suite, the README's command and CI's: two workers (pytest-xdist), each taking whole
# files, the files that train or start processes first; files and tests in a random order
# (pytest-randomly; the seed is printed, ARGS=--randomly-seed=N
# repeats one). ARGS="-n 0 -p no:randomly" runs it in one process in the files' order.
test: install
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder $(ARGS)

# Everyday work: the unit and asset tests that neither train nor start a process.
test-fast: install
	$(BIN)/python -m pytest -n 2 -m "not slow" $(ARGS)

serve: install instance
	$(BIN)/bentoml serve routeaq_serving.service:RouteAQ --port 8000

# The UI and the daemon (schedules, sensors, automation conditions, queued runs) on the same
# instance; switch the loop on in the UI (docs/monitoring.md).
dev: install instance
	$(BIN)/dagster dev -w workspace.yaml

# The monitoring loop through an injected shift (NO2 doubles across the network), hour by hour.
demo-drift: install instance
	$(BIN)/python -m routeaq_assets.demo_drift

# make evaluate DATA=folder-of-openair-tables [ARGS="--horizon 48 --daily"]
evaluate: install instance
	@test -n "$(DATA)" || (echo "usage: make evaluate DATA=folder-of-openair-tables [ARGS=\"--horizon 48 --daily\"]" && exit 2)
	$(BIN)/python -m routeaq_assets.evaluate "$(DATA)" $(ARGS)

bench: install instance
	$(BIN)/python bench/forecast_skill.py
	$(BIN)/python bench/heldout_skill.py
	$(BIN)/python bench/serving.py
	$(BIN)/python bench/soak.py

clean:
	rm -rf $(ROUTEAQ_HOME)
