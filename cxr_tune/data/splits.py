"""Leakage-safe splits: grouped (patient or near-duplicate cluster) and stratified.

All images of one group land in one split; within each stratum (a class, or a label combination
for multi-label data) groups are dealt to the split that is furthest below its target share, in
a seeded random order. The result is persisted with a content hash that every trial records.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence

import numpy as np

from cxr_tune.data.types import SPLITS

DEFAULT_FRACTIONS: tuple[float, float, float] = (0.70, 0.15, 0.15)


def check_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    """Validate train/val/test fractions: three positive numbers summing to 1."""
    values = tuple(float(f) for f in fractions)
    if len(values) != len(SPLITS) or min(values) <= 0 or abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(
            f"The split fractions are {values}, but must be three numbers > 0 summing to 1 "
            "(train, val, test)."
        )
    return values


def grouped_stratified_split(
    strata: Sequence[str],
    groups: Sequence[str],
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    fixed: Sequence[str | None] | None = None,
) -> dict[str, np.ndarray]:
    """Assign every item to train/val/test, keeping groups whole and strata balanced.

    Args:
        strata: one stratum key per item (class name, or a label combination).
        groups: one group id per item (patient id or near-duplicate cluster id).
        fractions: target shares of train, val and test. A share may be 0 (that split gets
            no dealt items), e.g. to carve only a val split out of a dataset's own train folder.
        seed: shuffles the order in which groups are dealt.
        fixed: a split name per item where the dataset fixes it (e.g. imagefolder's
            ``train/`` folder), else None. Fixed items always keep their split; the unfixed
            members of a group follow the split most of its fixed members have.

    Returns:
        split name -> sorted int64 indices.
    """
    targets = _check_shares(fractions)
    n = len(strata)
    if len(groups) != n or (fixed is not None and len(fixed) != n):
        raise ValueError("strata, groups and fixed must have one entry per item")
    assignment: list[str | None] = list(fixed) if fixed is not None else [None] * n

    members: dict[str, list[int]] = defaultdict(list)
    for i, group in enumerate(groups):
        members[group].append(i)
    # A group's stratum is its most common stratum.
    by_stratum: dict[str, list[str]] = defaultdict(list)
    for group, items in members.items():
        pinned = Counter(assignment[i] for i in items if assignment[i] is not None)
        if pinned:
            chosen = min(pinned, key=lambda s: (-pinned[s], s))
            for i in items:
                assignment[i] = assignment[i] or chosen
            continue
        stratum = Counter(strata[i] for i in items).most_common(1)[0][0]
        by_stratum[stratum].append(group)

    rng = np.random.default_rng(seed)
    share = dict(zip(SPLITS, targets, strict=True))
    open_splits = [s for s in SPLITS if share[s] > 0]
    for stratum in sorted(by_stratum):
        stratum_groups = sorted(by_stratum[stratum])
        order = rng.permutation(len(stratum_groups))
        total = sum(len(members[g]) for g in stratum_groups)
        filled = dict.fromkeys(SPLITS, 0)
        for k in order:
            group = stratum_groups[k]
            # Deal to the split furthest below its target, relative to the target.
            split = max(
                open_splits,
                key=lambda s: (share[s] * total - filled[s]) / (share[s] * total),
            )
            filled[split] += len(members[group])
            for i in members[group]:
                assignment[i] = split
    return {
        split: np.array(sorted(i for i, s in enumerate(assignment) if s == split), dtype=np.int64)
        for split in SPLITS
    }


def _check_shares(fractions: Sequence[float]) -> tuple[float, ...]:
    """Like :func:`check_fractions`, but a share may be 0 (at least one must be > 0)."""
    values = tuple(float(f) for f in fractions)
    if len(values) != len(SPLITS) or min(values) < 0 or abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(
            f"The split fractions are {values}, but must be three numbers >= 0 summing to 1 "
            "(train, val, test)."
        )
    return values


def split_hash(ids: Sequence[str], split: Mapping[str, np.ndarray]) -> str:
    """A content hash of a split: which item id went to which split (order independent)."""
    payload = {name: sorted(ids[i] for i in indices) for name, indices in split.items()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def leakage_audit(groups: Sequence[str], split: Mapping[str, np.ndarray]) -> dict[str, object]:
    """Check that no group crosses splits.

    Returns:
        ``{"groups": n, "crossing": k, "examples": [...]}``; ``crossing`` must be 0.
    """
    seen: dict[str, set[str]] = defaultdict(set)
    for name, indices in split.items():
        for i in indices:
            seen[groups[int(i)]].add(name)
    crossing = sorted(g for g, names in seen.items() if len(names) > 1)
    return {"groups": len(seen), "crossing": len(crossing), "examples": crossing[:5]}


def check_splits_filled(
    split: Mapping[str, np.ndarray],
    groups: Sequence[str],
    *,
    where: str,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
) -> None:
    """Refuse a split that leaves train, val or test without an image.

    Grouping (patients, near-duplicate clusters) keeps groups whole, so a small or repetitive
    folder can have too few groups to deal one to each split; a search then has nothing to
    validate on, and the evaluation nothing to test.

    Raises:
        DataError: naming the empty splits, how many images and groups there are, and what to
            change.
    """
    from cxr_tune.errors import DataError

    # A split asked to hold nothing (fraction 0, as a benchmark that reads every image in one
    # split asks) is empty by request, not by accident.
    wanted = [name for name, share in zip(SPLITS, fractions, strict=True) if share > 0]
    empty = [name for name in wanted if len(split.get(name, ())) == 0]
    if not empty:
        return
    sizes = Counter(groups)
    largest = max(sizes.values(), default=0)
    shares = "/".join(f"{f:g}" for f in fractions)
    raise DataError(
        f"The split of '{where}' leaves {' and '.join(empty)} empty: its {len(groups)} images "
        f"form {len(sizes)} group(s) (patients or near-duplicate clusters, kept whole; the "
        f"largest holds {largest} images), too few to deal into train/val/test {shares}. "
        "Add more images that are not copies of each other (a few dozen distinct ones at "
        "least), or give the dataset its own train/, val/ and test/ folders."
    )
