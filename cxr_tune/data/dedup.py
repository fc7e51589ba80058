"""Near-duplicate clusters from a perceptual signature, for splitting datasets without patient ids.

Dataset 2 ships hundreds of augmented copies (flips, rotations, crops) of its own images; an
image-level split would put an image in train and its mirror in test. Every image gets a
signature: the 63 lowest-frequency AC coefficients of the 2-D DCT of its 32x32 thumbnail (the
coefficients a pHash thresholds), scaled to unit length. Image ``j`` is a near-duplicate of image
``i`` when the cosine similarity between the signature of ``i`` and that of any *variant* of ``j``
is at least a threshold; the variants are ``j``'s centre crops at 90% and 80% (so a zoomed-in
copy matches), its 95% and 90% crops anchored at each corner (off-centre crops), and ``j``
rotated by +-4 degrees, each under the four flips (none, horizontal, vertical, both). The
relation is made symmetric. Real-valued similarity rather than a binary hash: pHash bits next to
the median flip under a 3-degree rotation, the cosine barely moves.

Clusters are built most similar pair first (single linkage, as union-find), but a merge that
would make a cluster larger than ``max_cluster`` is refused and counted: near-duplicates come in
handfuls, and a chain of merely similar radiographs must not swallow a whole class. The audit
reports the largest cluster and the refused merges, so a loose threshold shows.

Calibration on phantom images at 256 px (a worst case: its distinct patients share one anatomy
template and differ far less than real radiographs): flips score 1.0, centre crops of 10-20% and
rotations up to 5 degrees and off-centre crops of 5-10% >= 0.99, 8-degree rotations >= 0.983.
Of distinct pairs, 0.08% score above 0.985.

Two ways to find the pairs, with the same definition of a pair:

- ``exact`` compares every pair: float32 matrix products in row blocks, O(N^2) (about a minute
  for 21,000 images on two busy cores; hours at 224,000). Used up to :data:`EXACT_MAX_IMAGES`.
- ``index`` (above that) compares each image only with the images near it. Signatures are
  first *folded* (:func:`fold`: odd-frequency coefficients by magnitude), which makes them
  flip-invariant and can only raise a pair's similarity, so one query per variant replaces
  four. The folded signatures are split into cells by spherical k-means (about
  :data:`CELL_SIZE` images a cell, trained on a seeded sample: the result is deterministic);
  each variant of each image is compared with the members of the :data:`PROBES` cells whose
  centres are closest to it, and a candidate at the threshold is then checked under each flip
  with the plain signatures, as ``exact`` scores it. A near-duplicate lies within
  acos(threshold) of its query (10 degrees at 0.985), so it sits in one of the query's nearest
  cells unless it lies on a far boundary: few pairs are missed, and ``scripts/bench/scale.py``
  measures the share found against ``exact`` (the recall) side by side.

Images of one group (a patient, where the layout has ids) share a split whatever they look
like, so :func:`audit_pairs` keeps only pairs across groups.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

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
# Up to this many images the audit compares every pair; above it, through the index.
EXACT_MAX_IMAGES = 8192
# Mean images per index cell, and cells probed per query (measured: scripts/bench/scale.py).
CELL_SIZE = 200
PROBES = 16
# Images whose variants are compared at once, and query rows scored against the cell centres
# at once (bounded memory: about 40 MB each).
_QUERY_IMAGES = 512
_CENTRE_ROWS = 8192
_KMEANS_ITERATIONS = 10
_KMEANS_SAMPLE_PER_CELL = 48


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


def _variant_images(
    thumbs: np.ndarray,
    scales: Sequence[float],
    angles: Sequence[float],
    corner_scales: Sequence[float],
) -> list[np.ndarray]:
    """The variants of (N, T, T) float thumbnails as (N, 32, 32) images (the reference
    definition: :func:`variant_signatures` applies the same maps, composed into one matrix)."""
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
    return bases


def _coefficients(images: np.ndarray) -> np.ndarray:
    """The 63 low-frequency AC DCT coefficients of (N, S, S) images, not normalised."""
    dct = _dct_matrix(images.shape[1])[:_LOW]
    return (dct @ images @ dct.T).reshape(len(images), -1)[:, 1:]


@lru_cache(maxsize=4)
def _variant_map(
    t: int, scales: tuple[float, ...], angles: tuple[float, ...], corners: tuple[float, ...]
) -> np.ndarray:
    """(T*T, V*63) float32: the coefficients of every variant as one linear map of the pixels.

    Cropping, bilinear resampling, rotation and the DCT are all linear in the pixel values, so
    the map is found once by pushing the T*T unit images through the reference definition.
    """
    basis = np.eye(t * t).reshape(t * t, t, t)
    images = _variant_images(basis, scales, angles, corners)
    return np.concatenate([_coefficients(b) for b in images], axis=1).astype(np.float32)


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
    odd-frequency DCT coefficients (see :func:`near_duplicate_pairs`). Computed as one matrix
    product (see ``_variant_map``).
    """
    thumbs = np.asarray(thumbs)
    n, t = thumbs.shape[0], thumbs.shape[1]
    linear = _variant_map(t, tuple(scales), tuple(angles), tuple(corner_scales))
    flat = thumbs.reshape(n, t * t).astype(np.float32)
    coefficients = (flat @ linear).reshape(n, -1, _LOW * _LOW - 1).transpose(1, 0, 2)
    norms = np.linalg.norm(coefficients, axis=2, keepdims=True)
    # A flat image has no AC energy, but float32 rounding leaves a trace of it: below this
    # share of the pixel sum, a variant counts as flat (a zero signature, similar to nothing).
    floor = 1e-6 * np.abs(flat).sum(axis=1)[None, :, None]
    return (coefficients / np.where(norms > floor, norms, np.inf)).astype(np.float32)


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


# --- the audit at scale ---------------------------------------------------------------------


class ThumbSource(Protocol):
    """Thumbnails read a slice at a time: an array, or a reader of rows on disk."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: slice) -> np.ndarray: ...


def exact_copies(pixels: ThumbSource, chunk: int = 1024) -> list[list[int]]:
    """Images whose decoded pixels are identical, as lists of two or more indices (ascending).

    A hash of the pixels, whatever the signature: an image with too little texture has an
    empty signature and is a near-duplicate of nothing, yet its copies are still copies.
    """
    first: dict[bytes, int] = {}
    groups: dict[int, list[int]] = {}
    for start in range(0, len(pixels), chunk):
        block = np.asarray(pixels[start : start + chunk])
        for k, image in enumerate(block):
            key = hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16).digest()
            index = start + k
            original = first.setdefault(key, index)
            if original != index:
                groups.setdefault(original, [original]).append(index)
    return list(groups.values())


@dataclass(frozen=True)
class Audit:
    """Near-duplicate pairs across groups, and how they were found.

    Attributes:
        pairs: (P, 2) int64 pairs (i, j), i < j, in different groups, most similar first.
        similarities: (P,) float32, the best similarity of each pair over variants and flips.
        method: ``exact`` (every pair compared) or ``index`` (near cells only).
        seconds: time taken.
        stats: what the index did (cells, probes, candidate comparisons).
    """

    pairs: np.ndarray
    similarities: np.ndarray
    method: str
    seconds: float
    stats: dict[str, Any] = field(default_factory=dict)


def audit_pairs(
    thumbs: ThumbSource,
    groups: np.ndarray | None = None,
    min_similarity: float = DEFAULT_SIMILARITY,
    *,
    method: str = "auto",
    probes: int = PROBES,
    cell_size: int = CELL_SIZE,
    progress: bool | None = False,
) -> Audit:
    """Near-duplicate pairs of images in different groups.

    Args:
        thumbs: (N, T, T) uint8 thumbnails, read a slice at a time.
        groups: (N,) int group of each image (a patient), or -1 where it has none; pairs
            within one group are dropped (its images share a split anyway). None: no groups.
        min_similarity: cosine at or above which a pair counts.
        method: ``exact``, ``index``, or ``auto`` (exact up to EXACT_MAX_IMAGES images).
        probes: cells each query is compared with (index only).
        cell_size: mean images per cell (index only).
        progress: progress bar on stderr (None: when stderr is a terminal).

    Returns:
        The pairs found, most similar first.
    """
    started = time.perf_counter()
    n = len(thumbs)
    if method == "auto":
        method = "exact" if n <= EXACT_MAX_IMAGES else "index"
    if method not in ("exact", "index"):
        raise ValueError(f"The value of `method` is {method!r}, but must be exact, index or auto.")
    stats: dict[str, Any] = {}
    if n < 2:
        pairs, sims = np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.float32)
    elif method == "exact":
        pairs, sims = near_duplicate_pairs(thumbs[0:n], min_similarity, progress)
    else:
        pairs, sims, stats = _indexed_pairs(
            thumbs, min_similarity, probes=probes, cell_size=cell_size, progress=progress
        )
    if groups is not None and len(pairs):
        groups = np.asarray(groups)
        a, b = groups[pairs[:, 0]], groups[pairs[:, 1]]
        across = (a != b) | (a < 0)
        pairs, sims = pairs[across], sims[across]
    return Audit(pairs, sims, method, time.perf_counter() - started, stats)


def _signatures_in_chunks(thumbs: ThumbSource, chunk: int = 4096) -> np.ndarray:
    n = len(thumbs)
    out = np.empty((n, _LOW * _LOW - 1), dtype=np.float32)
    for start in range(0, n, chunk):
        out[start : start + chunk] = signatures(thumbs[start : min(n, start + chunk)])
    return out


@dataclass(frozen=True)
class _Index:
    """Signatures sorted by cell: cell ``c`` holds images ``members[start[c]:start[c + 1]]``,
    whose folded signatures are ``folded[start[c]:start[c + 1]]`` (and plain ones ``plain``)."""

    centres: np.ndarray
    members: np.ndarray
    folded: np.ndarray
    plain: np.ndarray
    start: np.ndarray


@lru_cache(maxsize=1)
def _odd_coefficients() -> np.ndarray:
    """(63,) True where some flip changes the coefficient's sign (an odd frequency)."""
    return np.asarray((_flip_signs() < 0).any(axis=0))


def fold(vectors: np.ndarray) -> np.ndarray:
    """Flip-invariant signatures: odd-frequency coefficients replaced by their magnitude.

    For unit signatures a, b and any flip s, fold(a) . fold(b) >= a . (s * b): the folded
    similarity bounds the best flipped one from above, so comparing folded signatures misses
    no pair at a threshold (a candidate is then checked under each flip). One query per
    variant instead of four.
    """
    out = np.array(vectors, dtype=np.float32, copy=True)
    odd = _odd_coefficients()
    out[..., odd] = np.abs(out[..., odd])
    return out


def _nearest_cells(vectors: np.ndarray, centres: np.ndarray, k: int) -> np.ndarray:
    """(n, k) the k cells whose centres are most similar to each vector, in row blocks."""
    out = np.empty((len(vectors), k), dtype=np.int64)
    for lo in range(0, len(vectors), _CENTRE_ROWS):
        scores = vectors[lo : lo + _CENTRE_ROWS] @ centres.T
        if k == 1:
            out[lo : lo + len(scores), 0] = scores.argmax(axis=1)
        elif k >= centres.shape[0]:
            out[lo : lo + len(scores)] = np.argsort(-scores, axis=1)[:, :k]
        else:
            out[lo : lo + len(scores)] = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return out


def _train_centres(vectors: np.ndarray, cells: int, seed: int = 0) -> np.ndarray:
    """Spherical k-means on a seeded sample of the (non-zero) vectors: (cells, 63)."""
    rng = np.random.default_rng(seed)
    usable = np.flatnonzero(np.abs(vectors).sum(axis=1) > 0)
    size = min(len(usable), cells * _KMEANS_SAMPLE_PER_CELL)
    sample = vectors[np.sort(rng.choice(usable, size=size, replace=False))]
    centres = sample[rng.choice(len(sample), size=cells, replace=False)].copy()
    for _ in range(_KMEANS_ITERATIONS):
        assigned = _nearest_cells(sample, centres, 1)[:, 0]
        sums = np.zeros_like(centres)
        np.add.at(sums, assigned, sample)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        empty = norms[:, 0] < 1e-9
        # An empty cell restarts at a random sample point, so every cell stays in use.
        sums[empty] = sample[rng.choice(len(sample), size=int(empty.sum()), replace=False)]
        norms[empty] = 1.0
        centres = (sums / norms).astype(np.float32)
    return centres


def _build_index(plain: np.ndarray, cell_size: int) -> _Index:
    folded = fold(plain)
    usable = int((np.abs(folded).sum(axis=1) > 0).sum())
    cells = max(1, min(len(folded) // max(1, cell_size), usable))
    centres = _train_centres(folded, cells)
    assigned = _nearest_cells(folded, centres, 1)[:, 0]
    members = np.argsort(assigned, kind="stable")
    start = np.searchsorted(assigned[members], np.arange(cells + 1))
    return _Index(
        centres,
        members,
        np.ascontiguousarray(folded[members]),
        np.ascontiguousarray(plain[members]),
        start,
    )


def _indexed_pairs(
    thumbs: ThumbSource,
    min_similarity: float,
    *,
    probes: int,
    cell_size: int,
    progress: bool | None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    from threadpoolctl import threadpool_limits

    # Thousands of small products (a cell's queries by its members): BLAS threads cost more to
    # wake than they save, and on a busy machine far more (measured: 23x slower with 2 threads
    # than with one, on two cores shared with other work).
    with threadpool_limits(limits=1, user_api="blas"):
        return _indexed_pairs_serial(thumbs, min_similarity, probes, cell_size, progress)


def _indexed_pairs_serial(
    thumbs: ThumbSource,
    min_similarity: float,
    probes: int,
    cell_size: int,
    progress: bool | None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    from tqdm import tqdm

    n = len(thumbs)
    index = _build_index(_signatures_in_chunks(thumbs), cell_size)
    cells = len(index.centres)
    probes = max(1, min(probes, cells))
    keys: list[np.ndarray] = []
    sims: list[np.ndarray] = []
    counts = np.zeros(2, dtype=np.int64)
    disable = None if progress is None else not progress
    bar = tqdm(total=n, desc="near-duplicates", unit="img", file=sys.stderr, disable=disable)
    for lo in range(0, n, _QUERY_IMAGES):
        chunk = thumbs[lo : min(n, lo + _QUERY_IMAGES)]
        # (V * m, 63): row r is image lo + r % m.
        queries = variant_signatures(chunk).reshape(-1, _LOW * _LOW - 1)
        found_key, found_sim = _search(
            index, queries, lo, len(chunk), n, probes, min_similarity, counts
        )
        keys.append(found_key)
        sims.append(found_sim)
        bar.update(len(chunk))
    bar.close()
    key, sim = _best_per_key(np.concatenate(keys), np.concatenate(sims))
    pairs = np.stack([key // n, key % n], axis=1).astype(np.int64)
    order = np.lexsort((pairs[:, 1], pairs[:, 0], -sim))
    variants = len(SCALES) + len(ANGLES) + 4 * len(CORNER_SCALES)
    stats = {
        "cells": cells,
        "probes": probes,
        "largest_cell": int(np.diff(index.start).max()),
        "comparisons": int(counts[0]),
        "candidates": int(counts[1]),
        # Exact compares every image with every variant of every other, under four flips.
        "work_vs_exact": float(counts[0] / max(1.0, 4.0 * variants * n * n)),
    }
    return pairs[order], sim[order], stats


def _search(
    index: _Index,
    queries: np.ndarray,
    first: int,
    images: int,
    n: int,
    probes: int,
    min_similarity: float,
    counts: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Compare query rows with the members of their nearest cells (folded), then check each
    candidate under the four flips.

    Returns:
        (pair keys low * n + high, similarities), one entry per pair; ``counts`` gains the
        comparisons and candidates made.
    """
    folded = fold(queries)
    nearest = _nearest_cells(folded, index.centres, probes)
    cell_of = nearest.ravel()
    row_of = np.repeat(np.arange(len(queries)), probes)
    order = np.argsort(cell_of, kind="stable")
    cell_of, row_of = cell_of[order], row_of[order]
    bounds = np.searchsorted(cell_of, np.arange(len(index.centres) + 1))
    signs = _flip_signs()
    keys: list[np.ndarray] = []
    sims: list[np.ndarray] = []
    for cell in np.flatnonzero(np.diff(bounds)):
        lo, hi = index.start[cell], index.start[cell + 1]
        if lo == hi:
            continue
        rows = row_of[bounds[cell] : bounds[cell + 1]]
        scores = folded[rows] @ index.folded[lo:hi].T
        counts[0] += scores.size
        r, m = np.nonzero(scores >= min_similarity)
        if not len(r):
            continue
        counts[1] += len(r)
        # The best flip: (q * b) summed with each flip's signs.
        exact = ((queries[rows[r]] * index.plain[lo + m]) @ signs.T).max(axis=1)
        hit = exact >= min_similarity
        i = index.members[lo + m[hit]]
        j = first + rows[r[hit]] % images
        keep = i != j
        keys.append(np.minimum(i, j)[keep] * n + np.maximum(i, j)[keep])
        sims.append(exact[hit][keep])
    if not keys:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    return _best_per_key(np.concatenate(keys), np.concatenate(sims))


def _best_per_key(keys: np.ndarray, sims: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One entry per key, with its highest similarity."""
    if not len(keys):
        return keys.astype(np.int64), sims.astype(np.float32)
    order = np.lexsort((-sims, keys))
    keys, sims = keys[order], sims[order]
    first = np.concatenate([[True], keys[1:] != keys[:-1]])
    return keys[first].astype(np.int64), sims[first].astype(np.float32)


def pair_recall(found: np.ndarray, reference: np.ndarray) -> float:
    """Share of the ``reference`` pairs (e.g. the exact audit's) that ``found`` holds too."""
    if not len(reference):
        return 1.0
    n = int(max(found.max(initial=0), reference.max(initial=0))) + 1
    found_keys = np.asarray(found, np.int64)[:, 0] * n + np.asarray(found, np.int64)[:, 1]
    reference_keys = (
        np.asarray(reference, np.int64)[:, 0] * n + np.asarray(reference, np.int64)[:, 1]
    )
    return float(np.isin(reference_keys, found_keys).mean())
