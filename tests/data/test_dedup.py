from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cxr_tune.data.dedup import (
    UnionFind,
    cluster_near_duplicates,
    merge_pairs,
    near_duplicate_pairs,
    signatures,
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
