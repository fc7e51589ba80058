"""A dataset's own (published) split: kept exactly, or regrouped, and its leakage stated.

Some datasets ship a split: an imagefolder's ``train/``, ``val/``, ``test/`` folders, NIH's
``test_list.txt``, CheXpert's ``valid.csv``. It can leak: the same patient, or copies of one
image, on both sides. Two modes:

- ``grouped`` (the default): groups (patients, near-duplicate clusters) are kept whole. A group
  that spans the published split goes, whole, to the split most of its images were published
  in (ties: test, then val, then train), so images move across the published boundary; how many,
  and in which direction, is counted.
- ``published``: every image keeps its published split, so scores can be set beside published
  numbers; the leakage is reported next to them.

Either way a split the dataset lacks (often val) is carved out of its train split, grouped and
stratified. The audit counts, against the published split, the pairs of images of one patient on
both sides, and the pairs of images of one near-duplicate cluster (not of one patient) on both
sides: for a group with ``a`` images on one side and ``b`` on the other, ``a * b`` pairs.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cxr_tune.constants import SPLIT_MODES
from cxr_tune.data.types import SPLITS
from cxr_tune.errors import ConfigError

# Where a group spanning the published split goes when its images are evenly divided.
_TIE_ORDER = {"test": 0, "val": 1, "train": 2}


def check_split_mode(value: str) -> str:
    """Validate a ``--split`` value.

    Raises:
        ConfigError: not one of :data:`SPLIT_MODES` (with a did-you-mean).
    """
    if value not in SPLIT_MODES:
        from cxr_tune.errors import unknown_name_message

        raise ConfigError(unknown_name_message("split mode", value, SPLIT_MODES))
    return value


@dataclass(frozen=True)
class SplitPlan:
    """What to hand the grouped, stratified splitter.

    Attributes:
        fractions: shares of train/val/test; 0 for a published split (nothing is dealt to it).
        fixed: a split per image where it is decided up front, else None; None when the dataset
            has no published split.
        groups: the groups the splitter keeps whole (cut at the published boundary in
            ``published`` mode, so that no image crosses it).
        carved: splits the dataset lacks, carved out of its train split.
    """

    fractions: tuple[float, float, float]
    fixed: list[str | None] | None
    groups: list[str]
    carved: tuple[str, ...]


def plan_split(
    published: Sequence[str | None],
    groups: Sequence[str],
    fractions: Sequence[float],
    mode: str,
) -> SplitPlan:
    """Plan a split that keeps (``published``) or regroups (``grouped``) a published split.

    Args:
        published: each image's published split, or None; all None for a dataset without one.
        groups: each image's group (patient and near-duplicate cluster).
        fractions: train/val/test shares used when nothing is published.
        mode: ``grouped`` or ``published``.
    """
    check_split_mode(mode)
    base = (float(fractions[0]), float(fractions[1]), float(fractions[2]))
    present = {s for s in published if s}
    if not present:
        return SplitPlan(base, None, list(groups), ())
    carved = tuple(s for s in SPLITS if s not in present)
    free = {"train", *carved} if carved else set()
    shares = [f if s in free else 0.0 for s, f in zip(SPLITS, base, strict=True)]
    total = sum(shares)
    dealt = (shares[0] / total, shares[1] / total, shares[2] / total) if total else (1.0, 0, 0)

    def pinned(split: str | None) -> str | None:
        # Images published in train stay free where val or test is carved out of train.
        return None if (split == "train" and carved) else split

    if mode == "published":
        cut = [f"{g}@{s}" for g, s in zip(groups, published, strict=True)]
        return SplitPlan(dealt, [pinned(s) for s in published], cut, carved)
    members: dict[str, list[int]] = defaultdict(list)
    for i, group in enumerate(groups):
        members[group].append(i)
    fixed: list[str | None] = [None] * len(published)
    for items in members.values():
        counts = Counter(published[i] for i in items if published[i])
        if not counts:
            continue
        target = min(counts, key=lambda s: (-counts[s], _TIE_ORDER.get(s or "", 9)))
        for i in items:
            fixed[i] = pinned(target)
    return SplitPlan(dealt, fixed, list(groups), carved)


def published_audit(
    published: Sequence[str | None],
    patients: Sequence[str | None],
    groups: Sequence[str],
    split: Mapping[str, np.ndarray],
    plan: SplitPlan,
    mode: str,
) -> dict[str, Any] | None:
    """Leakage across the published split, and the images moved to keep groups whole.

    Args:
        published: each image's published split (None where the dataset has none).
        patients: each image's patient id (None where unknown).
        groups: each image's final group (patients joined by near-duplicate clusters).
        split: the split made, split name -> indices.
        plan: the plan it was made from.
        mode: ``grouped`` or ``published``.

    Returns:
        None when the dataset has no published split, else the counts (see the module doc).
    """
    if not any(published):
        return None
    final = np.empty(len(published), dtype=object)
    for name, indices in split.items():
        final[np.asarray(indices, dtype=np.int64)] = name
    # A carved split is part of the published train split.
    bucket = ["train" if s in plan.carved else s for s in final]
    moved = Counter(
        f"{p}->{b}" for p, b in zip(published, bucket, strict=True) if p is not None and p != b
    )
    patient_pairs = _crossing_pairs(published, patients)
    group_pairs = _crossing_pairs(published, list(groups))
    crossing_groups = _crossing_groups(published, list(groups))
    return {
        "mode": mode,
        "published_sizes": dict(sorted(Counter(s for s in published if s).items())),
        "carved": list(plan.carved),
        "crossing_pairs_same_patient": patient_pairs,
        "crossing_pairs_near_duplicate": max(0, group_pairs - patient_pairs),
        "crossing_groups": crossing_groups,
        "moved": dict(sorted(moved.items())),
        "moved_total": int(sum(moved.values())),
        "test_images": {
            "published": int(sum(s == "test" for s in published)),
            "used": int(len(split.get("test", ()))),
        },
    }


def _crossing_pairs(published: Sequence[str | None], keys: Sequence[str | None]) -> int:
    """Pairs of images with one key (patient or group) on two sides of the published split."""
    per_key: dict[str, Counter[str]] = defaultdict(Counter)
    for key, split in zip(keys, published, strict=True):
        if key is not None and split is not None:
            per_key[key][split] += 1
    pairs = 0
    for counts in per_key.values():
        sizes = list(counts.values())
        pairs += (sum(sizes) ** 2 - sum(n * n for n in sizes)) // 2
    return int(pairs)


def _crossing_groups(published: Sequence[str | None], groups: Sequence[str]) -> int:
    sides: dict[str, set[str]] = defaultdict(set)
    for group, split in zip(groups, published, strict=True):
        if split is not None:
            sides[group].add(split)
    return sum(len(s) > 1 for s in sides.values())


def published_notes(audit: Mapping[str, Any] | None) -> list[str]:
    """Plain sentences on the published split: its leakage, and what was done about it."""
    if audit is None:
        return []
    sizes = ", ".join(f"{s} {n}" for s, n in audit["published_sizes"].items())
    pairs = (
        f"{audit['crossing_pairs_same_patient']} same-patient and "
        f"{audit['crossing_pairs_near_duplicate']} near-duplicate pairs of images lie on both "
        f"sides of it ({audit['crossing_groups']} groups)"
    )
    carved = (
        f"; {' and '.join(audit['carved'])} carved out of its train split"
        if audit["carved"]
        else ""
    )
    if audit["mode"] == "published":
        return [
            f"Published split kept exactly (--split published: {sizes}){carved}. {pairs}: "
            "scores on its test split are inflated by that leakage."
        ]
    if not audit["moved_total"]:
        return [f"Published split ({sizes}) kept{carved}; {pairs}."]
    moves = ", ".join(f"{k} {n}" for k, n in audit["moved"].items())
    test = audit["test_images"]
    return [
        f"Published split ({sizes}) regrouped (--split grouped): {pairs}; "
        f"{audit['moved_total']} images moved to keep groups whole ({moves}){carved}. The test "
        f"split holds {test['used']} images, the published one {test['published']}. "
        "--split published keeps it exactly."
    ]
