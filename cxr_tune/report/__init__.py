"""Best-trial reports from an experiment folder; needs no Ray cluster."""

from __future__ import annotations

from pathlib import Path

from cxr_tune.report.experiment import Experiment, load_experiment

__all__ = ["Experiment", "load_experiment", "write_report"]


def write_report(folder: str | Path, out: str | Path | None = None) -> Path:
    """Write ``report.md`` for the experiment in ``folder`` into ``out`` (default: the folder).

    Returns:
        The path of ``report.md``.
    """
    from cxr_tune.report.markdown import render

    experiment = load_experiment(folder)
    target = Path(out).expanduser() if out else experiment.folder
    target.mkdir(parents=True, exist_ok=True)
    path = target / "report.md"
    tmp = path.with_name(".report.md.tmp")
    tmp.write_text(render(experiment), encoding="utf-8")
    tmp.replace(path)
    return path
