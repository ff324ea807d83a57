"""The house's layout, read from the source: no import cycles among the product's modules, a
``core`` of pure functions and contracts (no outside I/O), and the Dagster-free parts free of
Dagster. Each rule names the file and line that breaks it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import REPO

PACKAGES = ("routeaq_assets", "routeaq_serving")
# Clients of outside systems: the network, other processes' stores, file locks. Their home is
# ``routeaq_assets/adapters/`` (or a Dagster resource), never ``core/``.
OUTSIDE_IO = (
    "boto3", "botocore", "dagster_aws", "dagster_mlflow", "duckdb", "fcntl", "http", "mlflow", "psycopg", "psycopg2",
    "redis", "requests", "smtplib", "socket", "sqlalchemy", "urllib", "urllib3",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for package in PACKAGES for p in sorted((REPO / package).rglob("*.py"))}


def imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every import in ``path``: at the top and inside functions, absolute
    and relative; ``from package import name`` counts as ``package.name`` when that is a module."""
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], *([base] if base else [])])
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names if f"{base}.{alias.name}" in MODULES]
    return found


def import_graph() -> dict[str, set[str]]:
    """Each product module -> the product modules it imports."""
    graph = {}
    for name, path in MODULES.items():
        targets = set()
        for _, module in imports(path):
            # ``import a.b.c`` runs a, a.b and a.b.c: the deepest product module is the edge.
            while module and module not in MODULES:
                module = module.rpartition(".")[0]
            # A module's own enclosing packages are imported before it by Python itself: not an edge.
            if module and module != name and not (name.startswith(module + ".") and MODULES[module].name == "__init__.py"):
                targets.add(module)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan's algorithm),
    written as a path that returns to its start."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(set(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_path_through(graph, component) for component in components]


def _path_through(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """The shortest way from the component's first module back to itself."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node] & component):
                if target == start:
                    return paths[node] + [start]
                if target not in paths:
                    paths[target] = paths[node] + [target]
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle through {start}")


def forbidden(prefix: str, roots: tuple[str, ...]) -> list[str]:
    """``file:line module`` of each import, in the modules under ``prefix``, of a module whose top
    package is in ``roots``."""
    return [
        f"{MODULES[name].relative_to(REPO)}:{line} {module}"
        for name in MODULES
        if name == prefix or name.startswith(prefix + ".")
        for line, module in imports(MODULES[name])
        if module.split(".")[0] in roots
    ]


def test_the_scan_reads_every_module_and_its_function_level_imports():
    assert {"routeaq_assets.core.features", "routeaq_assets.definitions", "routeaq_serving.service"} <= set(MODULES)
    graph = import_graph()
    assert "routeaq_assets.core.features" in graph["routeaq_assets.core.warehouse_reads"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_among_the_product_modules():
    found = cycles(import_graph())
    assert found == [], "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in found)


def test_core_does_no_outside_io():
    found = forbidden("routeaq_assets.core", OUTSIDE_IO)
    assert found == [], "core/ is pure: move these to routeaq_assets/adapters/:\n" + "\n".join(found)


@pytest.mark.parametrize("prefix", ["routeaq_assets.core", "routeaq_assets.adapters", "routeaq_serving"])
def test_no_dagster_outside_the_asset_graph(prefix):
    if prefix not in MODULES:
        pytest.fail(f"{prefix} is missing")
    found = forbidden(prefix, ("dagster", "dagster_aws", "dagster_mlflow", "dagster_postgres", "dagster_webserver"))
    assert found == [], f"{prefix} never imports Dagster:\n" + "\n".join(found)


def test_core_imports_only_core():
    found = [hit for hit in forbidden("routeaq_assets.core", PACKAGES) if not hit.split()[1].startswith("routeaq_assets.core")]
    assert found == [], "core/ holds the contracts; adapters, resources and assets build on it, never the other way:\n" + "\n".join(found)


def test_the_service_image_holds_every_module_the_service_imports():
    """bentofile.yaml's include list (and the service Dockerfile that mirrors it) must carry each
    product module the service reaches, directly or through another."""
    import yaml

    includes = yaml.safe_load((REPO / "bentofile.yaml").read_text())["include"]
    shipped = {module_name(p) for pattern in includes for p in REPO.glob(pattern) if p.suffix == ".py"}
    graph, reached, todo = import_graph(), set(), ["routeaq_serving.service"]
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo += graph[module]
    assert "routeaq_assets.adapters.stores" in reached
    assert sorted(reached - shipped) == []


def test_loading_the_definitions_leaves_the_heavy_libraries_to_the_steps_that_use_them():
    """Every Dagster process loads the definitions: the CLI, each run worker, the daemon's and the
    webserver's code servers. LightGBM (with scikit-learn and SciPy), SciPy's stats and pandas took
    4.5 of the 7.5 s that took; they are imported where a model is fitted, drift is measured or
    the demo network is built."""
    import subprocess
    import sys

    heavy = ("lightgbm", "sklearn", "scipy", "pandas", "mlflow", "evidently")
    said = subprocess.run(
        [sys.executable, "-c", f"import sys, routeaq_assets.definitions; print(','.join(m for m in {heavy!r} if m in sys.modules))"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert said.returncode == 0, said.stderr[-2000:]
    assert said.stdout.strip() == "", f"loading routeaq_assets.definitions imports {said.stdout.strip()}"
