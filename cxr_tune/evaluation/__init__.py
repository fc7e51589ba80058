"""Finishing an experiment: the final evaluation on the test split (contenders, model runs,
external validation, the shortcut probe, clinical metrics), then the report.

``finish.finish`` is the one entry point that the search and ``cxr-tune evaluate`` call. The
modules: ``contenders`` (what is scored), ``sources`` (on what data), ``runs`` (one model, one
seed), ``generalisation`` (transfers, the probe, clinical statistics), ``assemble``
(evaluation.json from the runs), ``evaluate`` (the tasks on Ray), ``finish`` (evaluation and
report, local or remote), ``cli``. Submodules are imported on use, so ``--help`` stays instant.
"""
