"""The search: plan, per-cell Optuna searcher, per-cell ASHA, runner and CLI.

Submodules are imported on use, so ``python -m cxr_tune.search --help`` stays instant.
"""
