"""Faults planted in trial workers through Ray's ``worker_process_setup_hook``.

A trial whose batch size is ``RAISE_BATCH`` raises in its first epoch (a bug, a broken node);
one whose batch size is ``OOM_BATCH`` asks torch's allocator for more memory than any machine
has, which fails at once (a batch that does not fit) without touching memory. Everything else
in the trial is the real code.
"""

from __future__ import annotations

from typing import Any

RAISE_BATCH = 11
OOM_BATCH = 13
RAISED = "planted fault: this trial raises"


def install() -> None:
    """Wrap ``cxr_tune.engine.fit_epoch`` in this worker (the hook Ray calls at start-up)."""
    import torch

    from cxr_tune import engine

    real = engine.fit_epoch

    def fit_epoch(state: Any, cfg: Any, *args: Any, **kwargs: Any) -> Any:
        if cfg.batch_size == RAISE_BATCH:
            raise RuntimeError(RAISED)
        if cfg.batch_size == OOM_BATCH:
            torch.empty(2**62, dtype=torch.uint8)
        return real(state, cfg, *args, **kwargs)

    engine.fit_epoch = fit_epoch


FILE_SIZE_LIMIT_ENV = "CXR_TEST_FILE_SIZE_LIMIT"


def limit_file_size() -> None:
    """A worker that can write no file larger than ``$CXR_TEST_FILE_SIZE_LIMIT`` bytes: a full
    disk for one process, where a small file system cannot be mounted (writes fail EFBIG)."""
    import os
    import resource

    limit = int(os.environ[FILE_SIZE_LIMIT_ENV])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
