"""Patient ids read from well-known file-name conventions, where a layout gives none.

Some collections carry the patient in the file name only:

- Kermany et al.'s paediatric pneumonia set (and folders built from it):
  ``person<N>_bacteria_<M>.jpeg`` and ``person<N>_virus_<M>.jpeg``, N the patient. Its normals
  (``IM-<N>-<M>``, ``NORMAL2-IM-<N>-<M>``) are not read: that N is the patient was not
  confirmed on the data, and a wrong guess would merge unrelated images.
- NIH ChestX-ray14: ``<patient: 8 digits>_<follow-up: 3 digits>.png``.

:func:`name_patients` fills the group of records that have none and says how many it filled per
convention, so the output can state that patient ids came from file names.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Sequence

from cxr_tune.data.types import Record

# (convention label, pattern on the file name, group prefix).
CONVENTIONS: tuple[tuple[str, re.Pattern[str], str], ...] = (
    (
        "Kermany person<N>_bacteria|virus_<M>",
        re.compile(r"^person(\d+)_(?:bacteria|virus)_\d+\.[A-Za-z]+$", re.IGNORECASE),
        "kermany-person",
    ),
    (
        "NIH <patient>_<follow-up>.png",
        re.compile(r"^(\d{8})_\d{3}\.png$", re.IGNORECASE),
        "nih-patient",
    ),
)


def patient_from_name(name: str) -> tuple[str, str] | None:
    """``(group, convention)`` when the file name follows a known convention, else None."""
    for label, pattern, prefix in CONVENTIONS:
        match = pattern.match(name)
        if match:
            return f"{prefix}:{int(match.group(1))}", label
    return None


def name_patients(records: Sequence[Record]) -> tuple[list[Record], dict[str, int]]:
    """Records with the group filled from the file name where they had none.

    Returns:
        (records, images per convention that gave a patient id).
    """
    used: Counter[str] = Counter()
    out: list[Record] = []
    for record in records:
        found = patient_from_name(record.path.name) if record.group is None else None
        if found is None:
            out.append(record)
            continue
        group, label = found
        used[label] += 1
        out.append(dataclasses.replace(record, group=group))
    return out, dict(used)


def name_patient_note(used: dict[str, int]) -> list[str]:
    """The note saying that (and how many) patient ids came from file names."""
    if not used:
        return []
    shown = ", ".join(f"{n} images by {label}" for label, n in used.items())
    return [f"Patient ids read from file names: {shown}."]
