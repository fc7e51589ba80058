"""``python -m cxr_tune.evaluate``: the ``evaluate`` command of ``cxr-tune`` under the name the
documentation has always given it. The evaluation itself is the package ``cxr_tune.evaluation``.
"""

from __future__ import annotations

if __name__ == "__main__":
    from cxr_tune.evaluation.__main__ import main

    raise SystemExit(main())
