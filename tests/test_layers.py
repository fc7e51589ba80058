"""The package's shape: every module imports on its own, imports point down the layers, the
lower layers never import Ray, and no import cycle exists anywhere in the package.

Imports are read from the source (every ``import`` statement, including the ones inside
functions that keep start-up fast and the ones under ``if __name__ == "__main__":``), not from
``sys.modules``, so an import that only runs on some path still counts. ``from cxr_tune.data
import X`` counts as an import of the package ``cxr_tune.data`` (its ``__init__.py``) as well as
of ``X``, as Python runs it. Only imports under ``if TYPE_CHECKING:`` (annotations) do not count.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cxr_tune"

# Layer of each module (a prefix stands for a package); a module may import only from its own
# layer or below. The results layer (experiment, stats, storage, with the metrics it scores
# with) sits under everything that reads experiments; the evaluation finishes an experiment
# (evaluation, then report), so it sits above the report; search orchestrates a run from data
# to the finished experiment, so it sits above both, and the one command line above all.
# README.md's package map gives the same layers.
LAYERS: dict[str, int] = {
    "cxr_tune": 0,
    "cxr_tune.errors": 0,
    "cxr_tune.registry": 0,
    "cxr_tune.constants": 0,
    "cxr_tune.processes": 0,
    "cxr_tune.files": 0,
    "cxr_tune.config": 1,
    "cxr_tune.spaces": 1,
    "cxr_tune.metrics": 1,
    "cxr_tune.experiment": 1,
    "cxr_tune.stats": 1,
    "cxr_tune.storage": 1,
    "cxr_tune.data": 2,
    "cxr_tune.models": 2,
    "cxr_tune.optim": 2,
    "cxr_tune.losses": 2,
    "cxr_tune.calibration": 2,
    "cxr_tune.ood": 2,
    "cxr_tune.engine": 3,
    # Beside the loop: both prepare images as engine.prepare_batch does.
    "cxr_tune.features": 3,
    "cxr_tune.saliency": 3,
    "cxr_tune.trainable": 4,
    "cxr_tune.report": 5,
    "cxr_tune.evaluation": 6,
    # The model package: reads models and the evaluation's facts; never Ray.
    "cxr_tune.bundle": 6,
    "cxr_tune.search": 7,
    "cxr_tune.cli": 8,
    # ``python -m cxr_tune.evaluate``, the command's documented name: an entry point only.
    "cxr_tune.evaluate": 9,
    # ``python -m cxr_tune.export`` and ``python -m cxr_tune.predict``: entry points only.
    "cxr_tune.export": 9,
    "cxr_tune.predict": 9,
}
ENTRY_POINT_LAYER = 9  # ``<package>/__main__.py``: ``python -m cxr_tune.<package>``
# These never import Ray, so their tests (and the report on any laptop) need no cluster.
RAY_FREE_BELOW = 4
RAY_FREE = (
    "cxr_tune.report",
    "cxr_tune.evaluation.artefacts",
    "cxr_tune.evaluation.assemble",
    "cxr_tune.evaluation.contenders",
    "cxr_tune.evaluation.costs",
    "cxr_tune.evaluation.evidence",
    "cxr_tune.evaluation.generalisation",
    "cxr_tune.evaluation.runs",
    "cxr_tune.evaluation.schedule",
    "cxr_tune.evaluation.sources",
    "cxr_tune.bundle",
)
# Components that must not form a cycle, and the results layer they all read through.
COMPONENTS = {
    "results": ("cxr_tune.experiment", "cxr_tune.stats", "cxr_tune.storage", "cxr_tune.constants"),
    "evaluation": ("cxr_tune.evaluation",),
    "report": ("cxr_tune.report",),
    "search": ("cxr_tune.search",),
}


def module_names() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


def source_of(module: str) -> Path:
    path = PACKAGE.parent / Path(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _skipped_block(node: ast.If) -> bool:
    return ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")


def imports_of(module: str) -> set[str]:
    """Every module ``module`` imports, as absolute names."""
    tree = ast.parse(source_of(module).read_text(encoding="utf-8"))
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _skipped_block(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            # ``from cxr_tune.data import cli`` imports the submodule cxr_tune.data.cli
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    known = set(module_names())
    return {name for name in found if not name.startswith("cxr_tune") or name in known} - {module}


def layer_of(module: str) -> int:
    if module.endswith(".__main__"):
        return ENTRY_POINT_LAYER
    matches = [prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")]
    assert matches, f"{module} has no layer in tests/test_layers.py: give it one"
    return LAYERS[max(matches, key=len)]


def component_of(module: str) -> str | None:
    for name, prefixes in COMPONENTS.items():
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return name
    return None


@pytest.mark.parametrize("module", module_names())
def test_module_imports_only_from_its_layer_or_below(module: str) -> None:
    own = layer_of(module)
    upward = sorted(
        f"{name} (layer {layer_of(name)})"
        for name in imports_of(module)
        if name.startswith("cxr_tune") and layer_of(name) > own
    )
    assert not upward, f"{module} (layer {own}) imports from above: {', '.join(upward)}"


@pytest.mark.parametrize(
    "module",
    [
        m
        for m in module_names()
        if not m.endswith("__main__") and (layer_of(m) < RAY_FREE_BELOW or m.startswith(RAY_FREE))
    ],
)
def test_lower_layers_never_import_ray(module: str) -> None:
    ray = sorted(name for name in imports_of(module) if name.split(".")[0] == "ray")
    assert not ray, f"{module} imports {', '.join(ray)}"


def test_no_cycle_between_the_results_layer_evaluate_report_and_search() -> None:
    edges: set[tuple[str, str]] = set()
    for module in module_names():
        source = component_of(module)
        if source is None or module.endswith("__main__"):
            continue
        for name in imports_of(module):
            target = component_of(name)
            if target is not None and target != source:
                edges.add((source, target))
    backward = sorted(f"{a} -> {b}" for a, b in edges if (b, a) in edges)
    assert not backward, f"import cycles: {backward}"
    assert {b for a, b in edges if a == "results"} == set(), edges
    assert ("report", "evaluation") not in edges
    assert ("search", "report") not in edges, "search finishes through evaluation.finish"


def test_import_graph_is_read_from_the_source() -> None:
    """The graph this file checks is real: known imports are found, lazy ones included."""
    assert "cxr_tune.experiment" in imports_of("cxr_tune.evaluation.evaluate")
    assert "ray" in imports_of("cxr_tune.evaluation.evaluate")  # inside evaluate_experiment
    assert "cxr_tune.evaluation.finish" in imports_of("cxr_tune.search.runner")
    # under ``if __name__ == "__main__":``
    assert "cxr_tune.evaluation.__main__" in imports_of("cxr_tune.evaluate")
    # ``from cxr_tune.data import cli`` runs cxr_tune/data/__init__.py too
    assert {"cxr_tune.data", "cxr_tune.data.cli"} <= imports_of("cxr_tune.cli")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_in_the_package() -> None:
    """No cycle among all modules, ``__main__`` blocks, lazy imports and imports through a
    package's ``__init__.py`` included (a package's ``__init__.py`` only hands names on)."""
    names = module_names()
    graph = {m: {n for n in imports_of(m) if n in names} for m in names}
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


@pytest.mark.slow
def test_every_module_imports_on_its_own() -> None:
    """Each module imports in a fresh interpreter state of the package (no other cxr_tune
    module imported first), so none relies on another having been imported before it."""
    script = (
        "import importlib, sys\n"
        f"names = {[m for m in module_names() if not m.endswith('__main__')]!r}\n"
        "failed = []\n"
        "for name in names:\n"
        "    for loaded in [m for m in sys.modules if m.split('.')[0] == 'cxr_tune']:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        failed.append(f'{name}: {type(exc).__name__}: {exc}')\n"
        "print('\\n'.join(failed))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=PACKAGE.parent,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", result.stdout
