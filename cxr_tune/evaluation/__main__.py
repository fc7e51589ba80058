"""``python -m cxr_tune.evaluation``: the ``evaluate`` command of ``cxr-tune``."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from cxr_tune.cli import run_command


def main(argv: Sequence[str] | None = None) -> int:
    return run_command("evaluate", argv)


if __name__ == "__main__":
    sys.exit(main())
