"""Near-duplicate clusters from a perceptual signature, for splitting datasets without patient ids.

Dataset 2 ships hundreds of augmented copies (flips, rotations, crops) of its own images; an
image-level split would put an image in train and its mirror in test. Every image gets a
signature: the 63 lowest-frequency AC coefficients of the 2-D DCT of its 32x32 thumbnail (the
coefficients a pHash thresholds), scaled to unit length. Image ``j`` is a near-duplicate of image
``i`` when the cosine similarity between the signature of ``i`` and that of any *variant* of ``j``
is at least a threshold; the variants are ``j``'s centre crops at 90% and 80% (so a zoomed-in
copy matches), its 95% and 90% crops anchored at each corner (off-centre crops), and ``j``
rotated by +-4 degrees, each under the four flips (none, horizontal, vertical, both). The relation is made symmetric. Real-valued similarity rather than a binary
hash: pHash bits next to the median flip under a 3-degree rotation, the cosine barely moves.

Clusters are built most similar pair first (single linkage, as union-find), but a merge that
would make a cluster larger than ``max_cluster`` is refused and counted: near-duplicates come in
handfuls, and a chain of merely similar radiographs must not swallow a whole class. The audit
reports the largest cluster and the refused merges, so a loose threshold shows.

Calibration on phantom images at 256 px (a worst case: its distinct patients share one anatomy
template and differ far less than real radiographs): flips score 1.0, centre crops of 10-20% and
rotations up to 5 degrees and off-centre crops of 5-10% >= 0.99, 8-degree rotations >= 0.983.
Of distinct pairs, 0.08% score above 0.985. The comparison is float32 matrix products in row
blocks, O(N^2) (about a minute for 21,000 images on two busy cores); flips cost
little (they only change signs, see ``near_duplicate_pairs``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Cosine similarity at or above which two images count as near-duplicates. Calibrated on 771
# real radiographs of 417 patients (scripts/bench/dedup_calibration.py): no pair of different
# patients' radiographs reached 0.985 among 7.4 million pairs, and 0.99 adds a margin for
# collections more alike than those (another public folder showed distinct patients up to
# 0.99). At 0.99, flips, re-encodings and crops of up to 20% are grouped with their original
# (>= 99.9%); 5-degree rotations and 10% shifts often are not (34-72%, 56%).
DEFAULT_SIMILARITY = 0.99
# Largest cluster the merge step builds; larger chains are refused and reported.
DEFAULT_MAX_CLUSTER = 64
# Centre-crop scales of the variants (1.0 = the whole image).
SCALES: tuple[float, ...] = (1.0, 0.9, 0.8)
# Rotations (degrees) of the variants: small-angle augmentations land between them.
ANGLES: tuple[float, ...] = (-4.0, 4.0)
# Off-centre crops of the variants: this share of each side, anchored at each of the 4 corners.
CORNER_SCALES: tuple[float, ...] = (0.95, 0.9)
_LOW = 8
_INPUT = 32
_BLOCK_ROWS = 128


@dataclass(frozen=True)
class Clusters:
    """Near-duplicate clusters: ``ids[i]`` is the smallest index in item i's cluster."""

    ids: np.ndarray
    pairs: int
    refused: int
    similarity: float
    max_cluster: int

    def summary(self) -> dict[str, float | int]:
        """Counts for the audit: clusters, items in multi-image clusters, largest, refused."""
        _, sizes = np.unique(self.ids, return_counts=True)
        return {
            "min_similarity": self.similarity,
            "near_duplicate_pairs": self.pairs,
            "clusters": int(len(sizes)),
            "images_in_shared_clusters": int(sizes[sizes > 1].sum()),
            "largest_cluster": int(sizes.max()) if len(sizes) else 0,
            "refused_merges": self.refused,
        }


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    matrix = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    matrix[0] /= np.sqrt(2.0)
    return matrix


def signatures(thumbs: np.ndarray) -> np.ndarray:
    """Unit-length low-frequency DCT signatures of (N, T, T) thumbnails: float32 (N, 63).

    A flat image (no AC energy) gets a zero signature, similar to nothing.
    """
    thumbs = np.asarray(thumbs, dtype=np.float64)
    if thumbs.ndim != 3 or thumbs.shape[1] != thumbs.shape[2]:
        raise ValueError(f"thumbnails must be (N, T, T), got shape {thumbs.shape}")
    dct = _dct_matrix(thumbs.shape[1])[:_LOW]
    coefficients = (dct @ thumbs @ dct.T).reshape(len(thumbs), -1)[:, 1:]
    norms = np.linalg.norm(coefficients, axis=1, keepdims=True)
    return (coefficients / np.where(norms > 1e-9, norms, np.inf)).astype(np.float32)


def _resample(thumbs: np.ndarray, side: int) -> np.ndarray:
    """Bilinear resize of (N, T, T) to (N, side, side), vectorised (pixel-centre aligned)."""
    n, t, _ = thumbs.shape
    pos = (np.arange(side) + 0.5) * (t / side) - 0.5
    pos = np.clip(pos, 0, t - 1)
    low = np.floor(pos).astype(np.int64)
    high = np.minimum(low + 1, t - 1)
    frac = pos - low
    rows = thumbs[:, low, :] * (1 - frac)[None, :, None] + thumbs[:, high, :] * frac[None, :, None]
    return rows[:, :, low] * (1 - frac)[None, None, :] + rows[:, :, high] * frac[None, None, :]


def _rotate(thumbs: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate (N, T, T) about the centre, bilinear, edges replicated."""
    t = thumbs.shape[1]
    angle = np.deg2rad(degrees)
    y, x = np.mgrid[0:t, 0:t].astype(np.float64) - (t - 1) / 2.0
    src_x = np.clip(np.cos(angle) * x + np.sin(angle) * y + (t - 1) / 2.0, 0, t - 1)
    src_y = np.clip(-np.sin(angle) * x + np.cos(angle) * y + (t - 1) / 2.0, 0, t - 1)
    x0, y0 = np.floor(src_x).astype(np.int64), np.floor(src_y).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, t - 1), np.minimum(y0 + 1, t - 1)
    fx, fy = src_x - x0, src_y - y0
    top = thumbs[:, y0, x0] * (1 - fx) + thumbs[:, y0, x1] * fx
    bottom = thumbs[:, y1, x0] * (1 - fx) + thumbs[:, y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def variant_signatures(
    thumbs: np.ndarray,
    scales: Sequence[float] = SCALES,
    angles: Sequence[float] = ANGLES,
    corner_scales: Sequence[float] = CORNER_SCALES,
) -> np.ndarray:
    """Signatures of each thumbnail's unflipped variants: (V, N, 63); variant 0 is the image.

    Variants are the centre crops at ``scales``, the whole image rotated by ``angles``, and
    crops of ``corner_scales`` anchored at each corner (an off-centre crop), all resampled to
    32 px. Flips need no variants of their own: flipping an image only changes the signs of its
    odd-frequency DCT coefficients (see :func:`near_duplicate_pairs`).
    """
    thumbs = np.asarray(thumbs, dtype=np.float64)
    t = thumbs.shape[1]
    bases = []
    for scale in scales:
        margin = int(round(t * (1.0 - scale) / 2.0))
        bases.append(_resample(thumbs[:, margin : t - margin, margin : t - margin], _INPUT))
    bases.extend(_resample(_rotate(thumbs, angle), _INPUT) for angle in angles)
    for scale in corner_scales:
        k = int(round(t * scale))
        for top, left in ((0, 0), (0, t - k), (t - k, 0), (t - k, t - k)):
            bases.append(_resample(thumbs[:, top : top + k, left : left + k], _INPUT))
    return np.stack([signatures(base) for base in bases])


def _flip_signs() -> np.ndarray:
    """(4, 63) signs that turn a signature into that of the flipped image: none, horizontal,
    vertical, both. Flipping negates the DCT coefficients of odd frequency along the flip."""
    u, v = np.divmod(np.arange(1, _LOW * _LOW), _LOW)
    return np.stack([np.ones(u.shape), (-1.0) ** v, (-1.0) ** u, (-1.0) ** (u + v)]).astype(
        np.float32
    )


def near_duplicate_pairs(
    thumbs: np.ndarray, min_similarity: float = DEFAULT_SIMILARITY, progress: bool | None = False
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i, j), i < j, at least ``min_similarity`` alike under some variant or flip.

    Flipping row ``i`` instead of the variants of ``j`` gives the same similarities
    (a . (s * b) = (s * a) . b) and costs one matrix product per variant and row block.

    Args:
        thumbs: (N, T, T) uint8 thumbnails.
        min_similarity: cosine at or above which a pair counts.
        progress: progress bar on stderr (None: when stderr is a terminal).

    Returns:
        ``(pairs (P, 2) int64, similarities (P,) float32)``, most similar first (ties by i, j).
    """
    import sys

    from tqdm import tqdm

    variants = variant_signatures(thumbs)
    columns = [np.ascontiguousarray(v.T) for v in variants]  # contiguous (63, N): fast BLAS
    signs = _flip_signs()
    n = variants.shape[1]
    found_i, found_j, found_s = [], [], []
    disable = None if progress is None else not progress
    blocks = tqdm(
        range(0, n, _BLOCK_ROWS), desc="near-duplicates", file=sys.stderr, disable=disable
    )
    for start in blocks:
        rows = variants[0][start : start + _BLOCK_ROWS]
        flipped = (signs[:, None, :] * rows[None]).reshape(-1, rows.shape[1])
        best = np.full((len(rows), n), -1.0, dtype=np.float32)
        for column in columns:
            np.maximum(best, (flipped @ column).reshape(4, len(rows), n).max(axis=0), out=best)
        i, j = np.nonzero(best >= min_similarity)
        keep = (i + start) != j
        found_i.append(i[keep] + start)
        found_j.append(j[keep])
        found_s.append(best[i[keep], j[keep]])
    i, j, sim = np.concatenate(found_i), np.concatenate(found_j), np.concatenate(found_s)
    # The relation is not symmetric (a crop matches its source one way): keep either direction.
    low, high = np.minimum(i, j), np.maximum(i, j)
    order = np.lexsort((high, low, -sim))
    low, high, sim = low[order], high[order], sim[order]
    _, first = np.unique(low * n + high, return_index=True)
    first = np.sort(first)
    return np.stack([low[first], high[first]], axis=1).astype(np.int64), sim[first]


class UnionFind:
    """Disjoint sets over ``0..n-1``; the root of a set is its smallest member."""

    def __init__(self, n: int) -> None:
        self.parent = np.arange(n)
        self.size = np.ones(n, dtype=np.int64)

    def find(self, x: int) -> int:
        root = x
        while self.parent[root] != root:
            root = int(self.parent[root])
        while self.parent[x] != root:  # path compression
            self.parent[x], x = root, int(self.parent[x])
        return root

    def union(self, a: int, b: int, max_size: int | None = None) -> bool:
        """Merge the sets of a and b; refuse (return False) above ``max_size`` members."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return True
        if max_size is not None and self.size[ra] + self.size[rb] > max_size:
            return False
        keep, drop = min(ra, rb), max(ra, rb)
        self.parent[drop] = keep
        self.size[keep] += self.size[drop]
        return True

    def roots(self) -> np.ndarray:
        return np.array([self.find(i) for i in range(len(self.parent))], dtype=np.int64)


def merge_pairs(
    sets: UnionFind, pairs: np.ndarray, max_cluster: int | None = DEFAULT_MAX_CLUSTER
) -> int:
    """Union ``pairs`` in the given order (closest first), refusing merges above ``max_cluster``.

    Returns:
        The number of refused merges.
    """
    refused = 0
    for a, b in np.asarray(pairs, dtype=np.int64).reshape(-1, 2):
        refused += not sets.union(int(a), int(b), max_cluster)
    return refused


def cluster_near_duplicates(
    thumbs: np.ndarray,
    min_similarity: float = DEFAULT_SIMILARITY,
    max_cluster: int = DEFAULT_MAX_CLUSTER,
) -> Clusters:
    """Cluster (N, T, T) uint8 thumbnails into near-duplicate groups (closest pairs first)."""
    return cluster_with(UnionFind(len(thumbs)), thumbs, min_similarity, max_cluster)


def cluster_with(
    sets: UnionFind,
    thumbs: np.ndarray,
    min_similarity: float = DEFAULT_SIMILARITY,
    max_cluster: int = DEFAULT_MAX_CLUSTER,
    progress: bool | None = False,
) -> Clusters:
    """Add near-duplicate merges to ``sets`` (which may already hold, e.g., patient groups)."""
    if len(thumbs) == 0:
        return Clusters(sets.roots(), 0, 0, min_similarity, max_cluster)
    pairs, _ = near_duplicate_pairs(thumbs, min_similarity, progress)
    refused = merge_pairs(sets, pairs, max_cluster)
    return Clusters(sets.roots(), int(len(pairs)), refused, min_similarity, max_cluster)
