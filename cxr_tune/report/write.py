"""Writing the report of an experiment: ``report.md``, a self-contained ``report.html``,
``trials.csv`` (one row per trial) and the plots as ``plots/*.png``."""

from __future__ import annotations

from pathlib import Path

from cxr_tune.constants import REPORT_HTML, REPORT_MD, TRIALS_CSV
from cxr_tune.experiment import Experiment, load_experiment
from cxr_tune.files import write_atomic

# Plot names the report writes; older ones with these prefixes are removed on a rewrite.
PLOT_PREFIXES: tuple[str, ...] = (
    "confusion-",
    "auroc-",
    "curves-",
    "ablation-",
    "importance",
    "efficiency",
    "budget",
    "transfer",
    "roc-",
    "reliability-",
)


def write_report(folder: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of the experiment in ``folder`` into ``out`` (default: the folder).

    Returns:
        The path of ``report.md`` (``report.html``, ``trials.csv`` and ``plots/`` beside it).

    Raises:
        DataError: ``folder`` is not an experiment folder.
        OSError: ``out`` cannot be written.
    """
    return write_experiment_report(load_experiment(folder), out)


def write_experiment_report(experiment: Experiment, out: str | Path | None = None) -> Path:
    """Write the report of an already loaded experiment; see ``write_report``."""
    import cxr_tune.report.html as html
    import cxr_tune.report.markdown as markdown
    from cxr_tune.report.build import build_document
    from cxr_tune.report.tables import trials_frame

    target = Path(out).expanduser() if out else experiment.folder
    target.mkdir(parents=True, exist_ok=True)
    doc, ctx = build_document(experiment, target)
    # Each file is replaced whole: a report opened (or a write that fails, a full disk) while
    # it is rewritten shows the old file or the new one, never half of one.
    write_atomic(target / REPORT_MD, markdown.render(doc))
    write_atomic(target / REPORT_HTML, html.render(doc, target))
    write_atomic(target / TRIALS_CSV, trials_frame(experiment).to_csv(index=False))
    # Only now: until the new report is in place, the old one still shows its plots.
    _remove_old_plots(target / "plots", keep=set(ctx.written))
    return target / REPORT_MD


def _remove_old_plots(plots: Path, keep: set[str]) -> None:
    """Drop plots an earlier report wrote (a cell may be gone) that this one did not, never
    other files."""
    if not plots.is_dir():
        return
    for path in plots.glob("*.png"):
        if path.name.startswith(PLOT_PREFIXES) and path.name not in keep:
            path.unlink(missing_ok=True)
