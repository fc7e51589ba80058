"""Best-trial reports from an experiment folder; needs no Ray cluster.

``write_report(folder)`` writes, into the folder (or ``out``): ``report.md``, a self-contained
``report.html``, ``trials.csv`` (one row per trial) and the plots as ``plots/*.png``
(``write.py``). ``build.py`` assembles the document from the sections in ``sections/``, one
module per part of the report; ``document.py`` is its format-free model, rendered by
``markdown.py`` and ``html.py``.
"""

from cxr_tune.report.write import write_experiment_report, write_report

__all__ = ["write_experiment_report", "write_report"]
