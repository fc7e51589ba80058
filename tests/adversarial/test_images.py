"""Bad image files inside an otherwise good dataset: each is skipped and listed by reason, or
decoded when it is a real image in an odd form; the dataset is still read (exit 0)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cxr_tune.data import images
from tests.adversarial.conftest import can_drop_root_file_access, run_module
from tests.adversarial.files import write_bad_images
from tests.data.builders import save_image

# File -> the skip reason it must be listed under.
SKIPPED = {
    "zero.png": images.SKIP_EMPTY,
    "truncated.png": images.SKIP_TRUNCATED,
    "truncated.jpg": images.SKIP_TRUNCATED,
    "page.png": images.SKIP_UNDECODABLE,
    "bomb.png": images.SKIP_TOO_LARGE,
    "one_pixel.png": images.SKIP_TOO_SMALL,
    "sliver.png": images.SKIP_ASPECT,
    "dangling.png": images.SKIP_UNREADABLE,
}
# Real images in unusual forms: decoded, with the mode they were found in.
DECODED = {"cmyk.jpg": "CMYK", "palette.png": "P", "sixteen.png": "I;16", "png_named.jpg": "L"}
GOOD_PER_CLASS = 10


def _dataset(root: Path) -> Path:
    for name in ("normal", "effusion"):
        for k in range(GOOD_PER_CLASS):
            save_image(root / name / f"{name}-{k}.png", 100 * len(name) + k)
    write_bad_images(root / "effusion")
    return root


@pytest.fixture(scope="module")
def inspected(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("bad_images")
    root = _dataset(base / "xr")
    outcome = run_module(
        "cxr_tune.data", "inspect", root, "--json", "--image-size", "32",
        "--cache-dir", base / "cache",
    )  # fmt: skip
    assert outcome.code == 0, outcome.err
    assert "Traceback" not in outcome.err
    return json.loads(outcome.out)


@pytest.mark.parametrize(("name", "reason"), sorted(SKIPPED.items()))
def test_bad_image_is_skipped_and_listed_with_its_reason(
    inspected: dict, name: str, reason: str
) -> None:
    skipped = inspected["skipped"]
    listed = [Path(p).name for p in skipped["examples"].get(reason, [])]
    assert name in listed, f"{name} not listed under {reason!r}: {skipped}"


def test_odd_but_real_images_are_decoded(inspected: dict) -> None:
    modes = inspected["image_modes"]
    for mode in ("CMYK", "P", "I;16"):
        assert modes.get(mode) == 1, modes
    # The good images, the odd real ones and the image inside the folder named like an image.
    expected = 2 * GOOD_PER_CLASS + len(DECODED) + 1
    assert sum(inspected["sizes"].values()) == expected
    assert inspected["skipped"]["total"] == len(SKIPPED)


@pytest.mark.skipif(
    not can_drop_root_file_access(),
    reason="running as root where root's file access cannot be dropped: permissions not enforced",
)
def test_unreadable_image_is_skipped_and_listed(tmp_path: Path) -> None:
    root = tmp_path / "xr"
    for name in ("a", "b"):
        for k in range(GOOD_PER_CLASS):
            save_image(root / name / f"{k}.png", 10 * ord(name) + k)
    locked = save_image(root / "a" / "locked.png", 1)
    locked.chmod(0)
    outcome = run_module(
        "cxr_tune.data", "inspect", root, "--json", "--image-size", "32",
        "--cache-dir", tmp_path / "cache", as_plain_user=True,
    )  # fmt: skip
    assert outcome.code == 0, outcome.err
    skipped = json.loads(outcome.out)["skipped"]
    assert skipped["examples"].get(images.SKIP_UNREADABLE) == [str(locked)], skipped
