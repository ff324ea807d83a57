# The Dagster user code: code server, and the image every run pod starts from (K8sRunLauncher).
# Build from the repository root:
#   docker build -f deploy/user-code.Dockerfile -t routeaq/user-code:0.1.0 .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OMP_WAIT_POLICY=PASSIVE \
    DAGSTER_HOME=/opt/dagster/dagster_home

# LightGBM needs the OpenMP runtime.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/routeaq
RUN pip install --no-cache-dir uv==0.13.9

# The locked dependencies first, so that a code change does not reinstall them.
COPY requirements.lock ./
RUN uv pip sync --system --no-cache requirements.lock
# The run pods load the instance, whose run launcher is dagster-k8s's K8sRunLauncher: the
# integration matching the pinned dagster, resolved against the lock so nothing locked moves.
RUN uv pip install --system --no-cache -c requirements.lock dagster-k8s==0.29.27

COPY pyproject.toml README.md workspace.yaml ./
COPY routeaq_assets ./routeaq_assets
COPY routeaq_serving ./routeaq_serving
RUN uv pip install --system --no-cache --no-deps . \
    && mkdir -p "$DAGSTER_HOME" \
    && useradd --create-home --uid 10001 routeaq \
    && chown -R routeaq "$DAGSTER_HOME"
USER routeaq

EXPOSE 3030
# The Helm chart and the compose file pass their own arguments; this is the code server alone.
CMD ["dagster", "code-server", "start", "-m", "routeaq_assets.definitions", "-h", "0.0.0.0", "-p", "3030"]
