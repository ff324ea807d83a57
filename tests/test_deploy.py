"""What can be checked of deploy/ without Docker or Kubernetes: the files parse, the Helm values
name only keys of the chart's schema, every variable the code reads is set wherever that code
runs, and the Dockerfiles copy files that exist."""

from __future__ import annotations

import copy
import fnmatch
import json
import re
import shlex
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
HELM_SCHEMA = Path(__file__).resolve().parent / "fixtures" / "helm" / "dagster-values.schema.json"
HELM_VALUES = DEPLOY / "helm" / "values.yaml"
SERVICE_MANIFEST = DEPLOY / "k8s" / "service.yaml"
COMPOSE = DEPLOY / "compose" / "compose.yaml"
DOCKERFILES = sorted(DEPLOY.glob("*.Dockerfile"))
# The local demo driver sets its own defaults for a laptop; nothing deployed runs it.
NOT_DEPLOYED = {REPO / "routeaq_assets" / "demo.py", REPO / "routeaq_assets" / "demo_drift.py"}
# The keys of the Kubernetes secrets the Helm values name in envSecrets (docs/operations.md):
# a variable one of them holds is set in the pods that name it.
SECRET_KEYS = {
    "routeaq-s3": {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"},
    "routeaq-alerts": {"ROUTEAQ_WEBHOOK_URL", "ROUTEAQ_WEBHOOK_TOKEN"},
    "routeaq-subscriptions": {"ROUTEAQ_SUBSCRIPTIONS_DB", "ROUTEAQ_SMTP_USER", "ROUTEAQ_SMTP_PASSWORD"},
}

ENV_READ = re.compile(
    r"""(?:os\.environ\.get|os\.environ\.setdefault|os\.getenv|os\.environ\[|EnvVar\(|EnvVar\.int\(|_variable\(|AliasChoices\()\s*\(?\s*["']([A-Z][A-Z0-9_]*)["']"""
)


def yaml_documents(path: Path) -> list:
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def variables_read(files) -> set[str]:
    return {name for path in files for name in ENV_READ.findall(path.read_text())}


def user_code_files() -> list[Path]:
    return [p for p in sorted((REPO / "routeaq_assets").rglob("*.py")) if p not in NOT_DEPLOYED]


def service_files() -> list[Path]:
    """The Python files the service image holds: bentofile.yaml's include list."""
    includes = yaml.safe_load((REPO / "bentofile.yaml").read_text())["include"]
    return sorted({p for pattern in includes for p in REPO.glob(pattern) if p.suffix == ".py"})


def image_variables(dockerfile: Path) -> set[str]:
    """The variables an image sets itself (its ``ENV`` instructions): set in every pod it runs."""
    text = dockerfile.read_text().replace("\\\n", " ")
    return {name for line in text.splitlines() if line.startswith("ENV ") for name in re.findall(r"([A-Z_][A-Z0-9_]*)=", line)}


def instance_variables() -> set[str]:
    """The variables deploy/dagster.yaml takes its settings from (``{env: NAME}``)."""
    found: set[str] = set()

    def walk(node):
        if isinstance(node, dict):
            if set(node) == {"env"} and isinstance(node["env"], str):
                found.add(node["env"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(yaml.safe_load((DEPLOY / "dagster.yaml").read_text()))
    return found


def pinned(package: str) -> str:
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(d.split("==")[1] for d in dependencies if d.split("==")[0] == package)


# --- every YAML parses -----------------------------------------------------------------------

@pytest.mark.parametrize("path", sorted(DEPLOY.rglob("*.yaml")) + [REPO / "bentofile.yaml", REPO / "workspace.yaml"], ids=lambda p: str(p.relative_to(REPO)))
def test_yaml_parses(path):
    assert yaml_documents(path), f"{path} holds no YAML document"


# --- Helm values against the chart's schema ---------------------------------------------------

def helm_schema() -> dict:
    return json.loads(HELM_SCHEMA.read_text())


def _resolve(node: dict, definitions: dict) -> dict | None:
    """Follow the schema's own references; None for a Kubernetes object the chart passes through
    (its schema refers to the Kubernetes definitions and declares no keys of its own)."""
    while "$ref" in node:
        ref = node["$ref"]
        if ref.startswith("#/definitions/"):
            node = definitions[ref.removeprefix("#/definitions/")]
        elif node.get("properties"):
            return node
        else:
            return None
    return node


def _same_type(value, node: dict | None) -> bool:
    if node is None or "type" not in node:
        return True
    python = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None), "integer": int, "number": (int, float)}
    return isinstance(value, python[node["type"]])


def unknown_keys(value, node: dict, definitions: dict, path: str = "") -> list[str]:
    """Keys of ``value`` that the schema does not declare where it declares keys."""
    node = _resolve(node, definitions)
    if node is None:
        return []
    if "anyOf" in node:
        # The branch of the value's own type (an object is not checked against ``null``).
        branches = [b for b in node["anyOf"] if _same_type(value, _resolve(b, definitions))]
        fits = [unknown_keys(value, branch, definitions, path) for branch in branches]
        return min(fits, key=len) if fits else []
    if isinstance(value, dict):
        properties = node.get("properties") or {}
        if not properties:
            return []  # a free-form map (labels, env, instance config)
        found = []
        for key, item in value.items():
            if key not in properties:
                found.append(f"{path}.{key}".lstrip("."))
            else:
                found += unknown_keys(item, properties[key], definitions, f"{path}.{key}")
        return found
    if isinstance(value, list) and "items" in node:
        return [k for i, item in enumerate(value) for k in unknown_keys(item, node["items"], definitions, f"{path}[{i}]")]
    return []


def type_errors(values: dict) -> list[str]:
    """Schema violations of types and enums. ``required`` is left out: Helm merges these values
    over the chart's own defaults before it validates, so a key left out here is still set.
    The Kubernetes object schemas the chart refers to by URL are not fetched here: those nodes
    are checked against the types the chart's schema states beside the reference."""

    def prepare(node):
        if isinstance(node, dict):
            return {
                k: prepare(v)
                for k, v in node.items()
                if not (k == "required" and isinstance(v, list)) and not (k == "$ref" and not v.startswith("#"))
            }
        if isinstance(node, list):
            return [prepare(v) for v in node]
        return node

    validator = jsonschema.Draft7Validator(prepare(helm_schema()))
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(values)]


def test_helm_values_name_only_keys_of_the_chart_schema():
    values = yaml.safe_load(HELM_VALUES.read_text())
    schema = helm_schema()
    assert unknown_keys(values, schema, schema["definitions"]) == []
    assert type_errors(values) == []


def test_helm_schema_check_catches_misspelt_and_mistyped_keys():
    values = yaml.safe_load(HELM_VALUES.read_text())
    schema = helm_schema()
    broken = copy.deepcopy(values)
    broken["dagsterWebserver"]["replicas"] = 2
    broken["dagster-user-deployments"]["deployments"][0]["codeServerArg"] = ["-m", "x"]
    broken["runLauncher"]["config"]["k8sRunLauncher"]["envSecret"] = []
    broken["postgress"] = {}
    assert sorted(unknown_keys(broken, schema, schema["definitions"])) == [
        "dagster-user-deployments.deployments[0].codeServerArg",
        "dagsterWebserver.replicas",
        "postgress",
        "runLauncher.config.k8sRunLauncher.envSecret",
    ]
    broken = copy.deepcopy(values)
    broken["dagsterWebserver"]["replicaCount"] = "one"
    broken["runLauncher"]["type"] = "K8sLauncher"
    errors = type_errors(broken)
    assert any(e.startswith("dagsterWebserver.replicaCount") for e in errors), errors
    assert any(e.startswith("runLauncher.type") for e in errors), errors


def test_helm_chart_and_schema_match_the_pinned_dagster():
    dagster = pinned("dagster")
    assert f"--version {dagster}" in HELM_VALUES.read_text()
    assert f"dagster/dagster {dagster}" in HELM_VALUES.read_text()
    assert dagster in (HELM_SCHEMA.parent / "README.md").read_text()
    values = yaml.safe_load(HELM_VALUES.read_text())
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["postgresql"]["enabled"] is False and values["generatePostgresqlPasswordSecret"] is False
    assert values["computeLogManager"]["type"] == "S3ComputeLogManager"


# --- every variable the code reads is set where the code runs ---------------------------------

def test_variable_scan_finds_what_the_code_reads():
    assert {"ROUTEAQ_ENV", "ROUTEAQ_HOME", "ROUTEAQ_SITES", "MLFLOW_TRACKING_URI"} <= variables_read(user_code_files())
    assert "ROUTEAQ_REFRESH_SECONDS" in variables_read(service_files())
    assert {"DAGSTER_PG_HOST", "DAGSTER_PG_PASSWORD"} <= instance_variables()
    assert image_variables(REPO / "deploy" / "user-code.Dockerfile") >= {"DAGSTER_HOME", "OMP_WAIT_POLICY"}
    sample = 'a = os.environ.get("A_1")\nb = os.getenv( "B" )\nc = os.environ["C"]\nd = dg.EnvVar("D")\ne = EnvVar.int("E")\nf: int = _variable("F", 1)\n'
    assert set(ENV_READ.findall(sample)) == {"A_1", "B", "C", "D", "E", "F"}  # _variable: a settings field's variable (core.environment)


def _container_env(manifest: Path, kind: str, name: str) -> set[str]:
    (document,) = [d for d in yaml_documents(manifest) if d["kind"] == kind and d["metadata"]["name"] == name]
    containers = document["spec"]["template"]["spec"]["containers"]
    return {e["name"] for c in containers for e in c.get("env", [])}


def test_helm_user_code_and_its_runs_get_every_variable():
    deployment = yaml.safe_load(HELM_VALUES.read_text())["dagster-user-deployments"]["deployments"][0]
    from_secrets = {key for secret in deployment.get("envSecrets", []) for key in SECRET_KEYS[secret["name"]]}
    from_image = image_variables(REPO / "deploy" / "user-code.Dockerfile")
    missing = variables_read(user_code_files()) - set(deployment["env"]) - from_secrets - from_image
    assert not missing, f"deploy/helm/values.yaml: the user-code deployment does not set {sorted(missing)}"
    # Run pods start with the code location's environment only when this is on.
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True


def test_service_manifest_sets_every_variable():
    missing = variables_read(service_files()) - _container_env(SERVICE_MANIFEST, "Deployment", "routeaq-service")
    assert not missing, f"deploy/k8s/service.yaml: the service Deployment does not set {sorted(missing)}"


def test_compose_sets_every_variable_where_the_code_runs():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    needs = {
        "dagster-code": variables_read(user_code_files()) | instance_variables(),
        "dagster-webserver": instance_variables(),
        "dagster-daemon": instance_variables(),
        "service": variables_read(service_files()),
    }
    for name, wanted in needs.items():
        missing = wanted - set(services[name]["environment"])
        assert not missing, f"deploy/compose/compose.yaml: service {name} does not set {sorted(missing)}"


# --- Kubernetes and compose wiring ------------------------------------------------------------

def test_service_manifests_are_wired_together():
    documents = {d["kind"]: d for d in yaml_documents(SERVICE_MANIFEST)}
    deployment, service, autoscaler = documents["Deployment"], documents["Service"], documents["HorizontalPodAutoscaler"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert '@app.get("/ready")' in (REPO / "routeaq_serving" / "service.py").read_text()
    port_names = {p["name"] for p in container["ports"]}
    assert container["readinessProbe"]["httpGet"]["port"] in port_names
    assert service["spec"]["ports"][0]["targetPort"] in port_names
    target = autoscaler["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert autoscaler["spec"]["minReplicas"] >= 2 and autoscaler["spec"]["maxReplicas"] > autoscaler["spec"]["minReplicas"]
    assert "resources" in container and container["resources"]["requests"]["cpu"]  # HPA utilisation needs a request


def test_compose_mounts_files_that_exist_and_builds_its_images_here():
    compose = yaml.safe_load(COMPOSE.read_text())
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), f"compose service {name} mounts {source}, which does not exist"
    built = {m.group(1) for d in DOCKERFILES for m in re.finditer(r"docker build -f \S+ -t (\S+) \.", d.read_text())}
    used = {s["image"] for s in compose["services"].values() if s["image"].startswith("routeaq/")}
    assert used and used <= built, f"compose uses {sorted(used - built)} that no Dockerfile here builds"


# --- Dockerfiles ------------------------------------------------------------------------------

def _dockerignored(path: str) -> bool:
    patterns = [line.strip().rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")]
    return any(fnmatch.fnmatch(path, p) or path.startswith(p + "/") for p in patterns)


def copied_sources(dockerfile: Path) -> list[str]:
    sources = []
    for line in dockerfile.read_text().splitlines():
        words = shlex.split(line) if line.strip().upper().startswith(("COPY ", "ADD ")) else []
        if words and not any(w.startswith("--from") for w in words):
            sources += [w for w in words[1:-1] if not w.startswith("--")]
    return sources


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_copies_files_that_exist(dockerfile):
    sources = copied_sources(dockerfile)
    assert sources, f"{dockerfile.name} copies nothing"
    for source in sources:
        assert (REPO / source).exists(), f"{dockerfile.name}: COPY {source}: no such file in the build context"
        assert not _dockerignored(source), f"{dockerfile.name}: COPY {source}: excluded by .dockerignore"
    command = re.search(r"^CMD (.+)$", dockerfile.read_text(), re.M).group(1)
    for module in re.findall(r"(routeaq_\w+(?:\.\w+)*)", command):
        assert (REPO / (module.replace(".", "/") + ".py")).exists(), f"{dockerfile.name} runs {module}, which does not exist"


def test_service_image_holds_what_bentofile_includes():
    """The Dockerfile stands in for `bentoml containerize`: it must carry every included file."""
    sources = copied_sources(DEPLOY / "service.Dockerfile")
    includes = yaml.safe_load((REPO / "bentofile.yaml").read_text())["include"]
    for pattern in includes:
        for path in REPO.glob(pattern):
            relative = str(path.relative_to(REPO))
            assert any(relative == s or relative.startswith(s.rstrip("/") + "/") for s in sources), f"service.Dockerfile does not copy {relative}"


def test_user_code_image_has_the_k8s_integration_matching_dagster():
    text = (DEPLOY / "user-code.Dockerfile").read_text()
    assert f"dagster-k8s=={pinned('dagster-postgres')}" in text
    assert "requirements.lock" in text
