"""One module per dataset layout; importing this package registers them all in ``DATASETS``.

Registration order is the order ``DATASETS.names()`` lists them: the specific layouts first,
the generic ``imagefolder`` last.
"""

from __future__ import annotations

from cxr_tune.data.layouts import (  # noqa: F401  (imported to register)
    chexpert,
    covid19_pneumonia_normal,
    covid19_radiography,
    covid_chestxray,
    nih_chestxray14,
)

# isort: split
from cxr_tune.data.layouts import imagefolder  # noqa: F401  (the generic layout, listed last)
