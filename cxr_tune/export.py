"""``python -m cxr_tune.export``: the ``export`` command of ``cxr-tune`` (the model package's code is
``cxr_tune.bundle``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from cxr_tune.cli import run_command

    return run_command("export", argv)


if __name__ == "__main__":
    sys.exit(main())
