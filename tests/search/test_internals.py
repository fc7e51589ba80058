"""Private Ray and Optuna internals: reached only through one module per library, and still there.

``cxr_tune/search/_ray_internals.py`` and ``_optuna_internals.py`` hold every use of the two
libraries' private attributes. ``problems()`` of each checks that the installed versions still
have them, so an upgrade that moves one fails here, naming the module to update, rather than
somewhere in a search.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from cxr_tune.search import _optuna_internals, _ray_internals

PACKAGE = Path(__file__).resolve().parents[2] / "cxr_tune"
INTERNALS = {
    PACKAGE / "search" / "_ray_internals.py",
    PACKAGE / "search" / "_optuna_internals.py",
}
# Private names of other libraries the package may use where it stands, with the reason.
ALLOWED = {
    # torch.compile's wrapper keeps the compiled module here (torch documents the pattern).
    "_orig_mod",
}


def _private_uses(path: Path) -> list[str]:
    """``name:line: code`` for each private attribute of an object other than ``self``/``cls``,
    each ``getattr``/``hasattr``/``setattr`` of a private name, and each private import."""
    found = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        name = None
        if isinstance(node, ast.Attribute):
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                name = node.attr
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr", "setattr")
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Constant)
            and not (isinstance(node.args[0], ast.Name) and node.args[0].id in ("self", "cls"))
        ):
            name = str(node.args[1].value)
        elif isinstance(node, ast.ImportFrom) and not (node.module or "").startswith("cxr_tune"):
            parts = (node.module or "").split(".") + [alias.name for alias in node.names]
            name = next((p for p in parts if p.startswith("_")), None)
        elif isinstance(node, ast.Import):
            parts = [p for alias in node.names for p in alias.name.split(".")]
            name = next((p for p in parts if p.startswith("_")), None)
        if name and name.startswith("_") and not name.startswith("__") and name not in ALLOWED:
            found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_private_library_apis_are_used_only_in_the_internals_modules() -> None:
    uses = [
        use
        for path in sorted(PACKAGE.rglob("*.py"))
        if path not in INTERNALS
        for use in _private_uses(path)
    ]
    assert uses == [], "move these into cxr_tune/search/_ray_internals.py or _optuna_internals.py"


def test_the_scan_finds_a_private_use(tmp_path: Path) -> None:
    # The check above must be able to fail: each form it looks for is found.
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import ray._private.utils\n"
        "from ray.experimental.internal_kv import _internal_kv_get\n"
        "def f(study, tuner):\n"
        "    self_like = study._storage\n"
        "    return getattr(tuner, '_local_tuner', None), self_like\n",
        encoding="utf-8",
    )
    found = _private_uses(sample)
    assert len(found) == 4, found


# Optuna's RDB tables: SQL that names one relies on Optuna's private table layout.
OPTUNA_TABLES = (
    "studies",
    "study_directions",
    "study_user_attributes",
    "study_system_attributes",
    "trials",
    "trial_params",
    "trial_values",
    "trial_intermediate_values",
    "trial_user_attributes",
    "trial_system_attributes",
    "trial_heartbeats",
    "version_info",
    "alembic_version",
)
_SQL_TABLE = re.compile(
    rf"\b(?:FROM|JOIN|INTO|UPDATE|TABLE)\s+({'|'.join(OPTUNA_TABLES)})\b", re.IGNORECASE
)


def _optuna_sql(path: Path) -> list[str]:
    """``name:line: table`` for each string in the module that is SQL on an Optuna table."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found += [f"{path.name}:{node.lineno}: {m}" for m in _SQL_TABLE.findall(node.value)]
    return found


def test_sql_on_optunas_tables_is_only_in_the_optuna_internals_module() -> None:
    uses = [
        use
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "_optuna_internals.py"
        for use in _optuna_sql(path)
    ]
    assert uses == [], "move this SQL into cxr_tune/search/_optuna_internals.py"


def test_the_sql_scan_finds_sql_on_an_optuna_table(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        'Q = ("SELECT a.value_json FROM trial_user_attributes a "\n'
        '     "JOIN trials t ON t.trial_id = a.trial_id")\n'
        'NOT_SQL = "the trials from the studies"\n',
        encoding="utf-8",
    )
    assert [u.split(": ")[1] for u in _optuna_sql(sample)] == ["trial_user_attributes", "trials"]
    assert _optuna_sql(PACKAGE / "search" / "_optuna_internals.py")  # the fence holds it


def test_a_changed_optuna_table_layout_is_named_with_the_module(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A layout the SQL does not expect (as a schema change would leave it): named, not a crash.
    monkeypatch.setattr(
        _optuna_internals,
        "ENDED_STATES",
        ("FINISHED",),
    )
    found = _optuna_internals.problems()
    assert len(found) == 1 and found[0].startswith("cxr_tune/search/_optuna_internals.py: ")
    assert "trial_user_attributes" in found[0]


def test_installed_ray_has_every_internal_used() -> None:
    assert _ray_internals.problems() == []


def test_installed_optuna_has_every_internal_used() -> None:
    assert _optuna_internals.problems() == []


def test_a_moved_ray_internal_is_named_with_the_module(monkeypatch: pytest.MonkeyPatch) -> None:
    import tensorboardX

    monkeypatch.delattr(tensorboardX.SummaryWriter, "_get_file_writer")
    found = _ray_internals.problems()
    assert len(found) == 1
    assert found[0].startswith("cxr_tune/search/_ray_internals.py: ")
    assert "_get_file_writer" in found[0] and "pyproject.toml" in found[0]


def test_a_moved_optuna_internal_is_named_with_the_module(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from optuna.storages import InMemoryStorage

    # Gone from the storage (a base-class stub would still answer), as a rename would leave it.
    monkeypatch.setattr(InMemoryStorage, "set_trial_user_attr", None)
    found = _optuna_internals.problems()
    assert found == [
        "cxr_tune/search/_optuna_internals.py: BaseStorage.set_trial_user_attr is gone in "
        f"optuna {__import__('optuna').__version__}; update this module and the bound in "
        "pyproject.toml."
    ]


def test_restored_parts_reaches_a_tuners_searcher_scheduler_and_run_config(
    tmp_path: Path,
) -> None:
    # The accessor the resume path relies on, on a real (unfitted) Tuner.
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search import BasicVariantGenerator

    searcher, scheduler = BasicVariantGenerator(), FIFOScheduler()
    run_config = tune.RunConfig(storage_path=str(tmp_path), name="parts")
    tuner = tune.Tuner(
        lambda config: None,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler),
        run_config=run_config,
    )
    found_searcher, found_scheduler, found_run_config = _ray_internals.restored_parts(tuner)
    assert found_searcher is searcher
    assert found_scheduler is scheduler
    assert found_run_config.name == "parts"
