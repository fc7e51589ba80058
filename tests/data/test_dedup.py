from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cxr_tune.data.dedup import (
    UnionFind,
    cluster_near_duplicates,
    exact_copies,
    merge_pairs,
    near_duplicate_pairs,
    signatures,
    variant_signatures,
)
from cxr_tune.data.images import decode_file
from tests.data.builders import D2_COPY_KINDS, pattern, save_copy, save_image


def _thumbs(paths: list[Path]) -> np.ndarray:
    thumbs = [decode_file(p, 32).thumb for p in paths]
    assert all(t is not None for t in thumbs)
    return np.stack(thumbs)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", D2_COPY_KINDS)
def test_copies_are_near_duplicates_of_their_original(tmp_path: Path, kind: str) -> None:
    from PIL import Image

    original = tmp_path / "original.png"
    Image.fromarray(pattern(77, 72, 72)).save(original)
    copy = save_copy(tmp_path / f"{kind}.png", 77, kind)
    others = [save_image(tmp_path / f"other{k}.png", 900 + k, "L", (72, 72)) for k in range(6)]
    clusters = cluster_near_duplicates(_thumbs([original, copy, *others]))
    assert clusters.ids[1] == clusters.ids[0] == 0
    assert len(set(clusters.ids[2:].tolist())) == 6  # distinct images stay apart


def test_distinct_patterns_are_not_grouped() -> None:
    from PIL import Image

    from cxr_tune.data.images import make_thumb

    thumbs = np.stack([make_thumb(Image.fromarray(pattern(s))) for s in range(300)])
    pairs, _ = near_duplicate_pairs(thumbs)
    assert len(pairs) == 0


def test_flat_image_matches_nothing() -> None:
    flat = np.full((2, 32, 32), 128, dtype=np.uint8)
    assert not signatures(flat).any()
    assert len(near_duplicate_pairs(flat)[0]) == 0


def test_merge_refuses_clusters_above_the_cap() -> None:
    sets = UnionFind(6)
    chain = np.array([[0, 1], [1, 2], [2, 3], [3, 4], [4, 5]])
    refused = merge_pairs(sets, chain, max_cluster=3)
    # 0-1-2 fill the cap, 2-3 is refused, 3-4-5 form a second cluster.
    assert refused == 1
    assert sets.roots().tolist() == [0, 0, 0, 3, 3, 3]


def test_union_find_roots_are_smallest_members() -> None:
    sets = UnionFind(5)
    sets.union(4, 2)
    sets.union(2, 3)
    assert sets.roots().tolist() == [0, 1, 2, 2, 2]


def test_flip_signs_equal_explicit_flips() -> None:
    from PIL import Image

    from cxr_tune.data.dedup import _flip_signs
    from cxr_tune.data.images import make_thumb

    thumbs = np.stack([make_thumb(Image.fromarray(pattern(s))) for s in range(12)])
    flips = [thumbs, thumbs[:, :, ::-1], thumbs[:, ::-1, :], thumbs[:, ::-1, ::-1]]
    plain = signatures(thumbs)
    for sign, flipped in zip(_flip_signs(), flips, strict=True):
        np.testing.assert_allclose(plain * sign, signatures(flipped), atol=1e-5)


def test_variant_signatures_equal_the_reference_pipeline() -> None:
    from cxr_tune.data.dedup import ANGLES, CORNER_SCALES, SCALES, _variant_images

    thumbs = np.random.default_rng(3).integers(0, 256, size=(20, 32, 32)).astype(np.uint8)
    images = _variant_images(thumbs.astype(np.float64), SCALES, ANGLES, CORNER_SCALES)
    reference = np.stack([signatures(image) for image in images])
    np.testing.assert_allclose(variant_signatures(thumbs), reference, atol=1e-5)


def test_fold_bounds_the_best_flip_from_above() -> None:
    from cxr_tune.data.dedup import _flip_signs, fold

    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((2, 500, 63)).astype(np.float32)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    best_flip = np.max([(a * (s * b)).sum(axis=1) for s in _flip_signs()], axis=0)
    folded = (fold(a) * fold(b)).sum(axis=1)
    assert (folded >= best_flip - 1e-6).all()
    np.testing.assert_allclose(np.linalg.norm(fold(a), axis=1), 1.0, atol=1e-6)


def _planted_set(n_distinct: int = 600) -> tuple[np.ndarray, np.ndarray, set[tuple[int, int]]]:
    """Distinct thumbnails, then augmented copies of 40 of them, each under a new group.

    Returns thumbnails, groups, and the planted (original, copy) pairs.
    """
    from PIL import Image

    from cxr_tune.data.images import make_thumb

    def copy(image: Image.Image, kind: str) -> Image.Image:
        side = image.size[0]
        if kind == "hflip":
            return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if kind == "vflip":
            return image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
        if kind == "crop":
            return image.crop((4, 4, side - 4, side - 4)).resize((side, side))
        if kind == "offcrop":
            return image.crop((4, 0, side, side - 4)).resize((side, side))
        return image.rotate(3, resample=Image.Resampling.BILINEAR, fillcolor=10)

    originals = [Image.fromarray(pattern(s, 48, 48)) for s in range(n_distinct)]
    thumbs = [make_thumb(image) for image in originals]
    planted = set()
    for k in range(40):
        source = (17 * k) % n_distinct
        thumbs.append(make_thumb(copy(originals[source], D2_COPY_KINDS[k % 5])))
        planted.add((source, len(thumbs) - 1))
    groups = np.arange(len(thumbs))
    return np.stack(thumbs), groups, planted


def test_audit_index_finds_the_planted_near_duplicates() -> None:
    from cxr_tune.data.dedup import audit_pairs, pair_recall

    thumbs, groups, planted = _planted_set()
    # At 0.985 every planted copy (3-degree rotations too) is a pair for the exact audit: what
    # is checked is that the index finds what the exact audit finds, at one threshold.
    threshold = 0.985
    exact = audit_pairs(thumbs, groups, threshold, method="exact")
    index = audit_pairs(thumbs, groups, threshold, method="index", cell_size=20, probes=3)
    assert planted <= {tuple(p) for p in exact.pairs.tolist()}
    assert index.method == "index" and index.stats["cells"] == len(thumbs) // 20
    assert index.stats["work_vs_exact"] < 0.25  # it did not compare every pair
    found = {tuple(p) for p in index.pairs.tolist()}
    assert planted <= found
    assert pair_recall(index.pairs, exact.pairs) >= 0.99
    # Where both found a pair, they agree on its similarity (the same definition).
    common = {tuple(p): s for p, s in zip(exact.pairs.tolist(), exact.similarities)}
    for pair, sim in zip(index.pairs.tolist(), index.similarities):
        if tuple(pair) in common:
            assert abs(common[tuple(pair)] - sim) < 1e-4


def test_audit_keeps_only_pairs_across_groups() -> None:
    from cxr_tune.data.dedup import audit_pairs

    thumbs, groups, planted = _planted_set(n_distinct=200)
    source, copy = sorted(planted)[0]
    groups[copy] = groups[source]  # the copy filed under its original's patient
    for method in ("exact", "index"):
        found = {tuple(p) for p in audit_pairs(thumbs, groups, method=method).pairs.tolist()}
        assert (source, copy) not in found
        assert planted - {(source, copy)} <= found


def test_audit_auto_compares_every_pair_of_a_small_set() -> None:
    from cxr_tune.data.dedup import audit_pairs

    thumbs, _, _ = _planted_set(n_distinct=100)
    assert audit_pairs(thumbs).method == "exact"


def test_exact_copies_are_found_by_their_pixels_whatever_their_signature() -> None:
    faint = np.full((4, 32, 32), 128, dtype=np.uint8)
    faint[:, 0, 0] = 129  # texture too faint for a signature, pixels not uniform
    faint[3, 0, 0] = 130  # a different image
    assert exact_copies(faint) == [[0, 1, 2]]
    assert exact_copies(faint, chunk=2) == [[0, 1, 2]]  # across reading chunks


def test_uniform_images_are_skipped_and_exact_copies_share_a_split(tmp_path: Path) -> None:
    import csv

    from PIL import Image

    from cxr_tune.config import DataSource
    from cxr_tune.data.images import SKIP_UNIFORM
    from cxr_tune.data.options import DataOptions
    from cxr_tune.data.prepare import prepare

    root = tmp_path / "xrays"
    for name in ("covid", "normal"):
        for k in range(12):
            save_image(root / name / f"{name}_{k}.png", 100 * len(name) + k)
    Image.new("L", (64, 64), 0).save(root / "covid" / "black.png")
    Image.new("L", (80, 64), 128).save(root / "normal" / "grey.png")
    # Three copies of one faint image under other names: no signature, one hash.
    faint = np.full((64, 64), 128, dtype=np.uint8)
    faint[10:12, 10:12] = 131
    for k in range(3):
        Image.fromarray(faint).save(root / "normal" / f"scan_{k}.png")
    options = DataOptions(image_size=64, cache_dir=tmp_path / "cache", workers=1)
    entry = prepare(DataSource("imagefolder", root), options, progress=None)
    skipped = json.loads((entry.path / "skipped.json").read_text())
    assert skipped["counts"][SKIP_UNIFORM] == 2
    assert sorted(Path(p).name for p in skipped["examples"][SKIP_UNIFORM]) == [
        "black.png",
        "grey.png",
    ]
    with open(entry.path / "manifest.csv", newline="") as handle:
        rows = {Path(r["path"]).name: r for r in csv.DictReader(handle)}
    assert "black.png" not in rows and "grey.png" not in rows
    copies = [rows[f"scan_{k}.png"] for k in range(3)]
    assert len({r["group"] for r in copies}) == 1 and len({r["split"] for r in copies}) == 1
    split = json.loads((entry.path / "split.json").read_text())
    assert split["near_duplicates"]["exact_copies"] == 2
