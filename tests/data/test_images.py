from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxr_tune.data import images
from cxr_tune.data.images import decode_bytes, decode_file, file_skip_reason
from tests.data.builders import pattern, save_image, save_truncated, to_mode

MODES = ("L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I")
FORMAT_OF = {"CMYK": ".jpg", "I": ".tif"}


@pytest.mark.parametrize("mode", MODES)
def test_decode_every_mode_to_gray(tmp_path: Path, mode: str) -> None:
    path = save_image(tmp_path / f"x{FORMAT_OF.get(mode, '.png')}", 7, mode, (64, 48))
    result = decode_file(path, 32)
    assert result.skip is None
    assert result.mode == mode
    assert (result.width, result.height) == (64, 48)
    assert result.pixels is not None and result.pixels.shape == (32, 32)
    assert result.pixels.dtype == np.uint8
    # Same picture whatever the mode: close to the L version (JPEG is lossy, hence the margin).
    reference = decode_file(save_image(tmp_path / "ref.png", 7, "L", (64, 48)), 32).pixels
    assert reference is not None
    corr = np.corrcoef(result.pixels.ravel().astype(float), reference.ravel().astype(float))[0, 1]
    assert corr > 0.98


@pytest.mark.parametrize("mode", ["I;16", "I"])
def test_decode_wide_modes_scale_by_real_range(mode: str) -> None:
    image = to_mode(pattern(3), mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG" if mode == "I;16" else "TIFF")
    result = decode_bytes(buffer.getvalue(), 64)
    assert result.pixels is not None
    # 300..3120 (I;16) or -4000..18500 (I) stretched to the full 8-bit range, not clipped.
    assert result.pixels.min() == 0 and result.pixels.max() == 255
    assert len(np.unique(result.pixels)) > 100


def test_decode_constant_wide_image_is_black() -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.full((16, 16), 1234, dtype=np.uint16)).save(buffer, format="PNG")
    result = decode_bytes(buffer.getvalue(), 8)
    assert result.pixels is not None and result.pixels.max() == 0


@pytest.mark.parametrize("name", ["a.PNG", "b.Jpg", "c.JPEG", "d.png", "e.jpeg"])
def test_decode_any_extension_case(tmp_path: Path, name: str) -> None:
    path = save_image(tmp_path / name, 1)
    assert file_skip_reason(name) is None
    assert decode_file(path, 16).skip is None


def test_decode_matches_torchvision_resize_center_crop(tmp_path: Path) -> None:
    from torchvision import transforms

    path = save_image(tmp_path / "wide.png", 5, "L", (90, 60))
    expected = transforms.Compose([transforms.Resize(32), transforms.CenterCrop(32)])(
        Image.open(path)
    )
    result = decode_file(path, 32)
    assert result.pixels is not None
    np.testing.assert_array_equal(result.pixels, np.asarray(expected))


@pytest.mark.parametrize(
    ("write", "reason"),
    [
        (lambda p: p.write_bytes(b""), images.SKIP_EMPTY),
        (lambda p: p.write_bytes(b"not an image at all"), images.SKIP_UNDECODABLE),
        (lambda p: save_truncated(p, 2), images.SKIP_TRUNCATED),
    ],
    ids=["zero-byte", "garbage", "truncated"],
)
def test_decode_bad_files_are_skipped_not_raised(tmp_path: Path, write, reason: str) -> None:
    path = tmp_path / "bad.png"
    write(path)
    result = decode_file(path, 32)
    assert result.skip == reason
    assert result.pixels is None


def test_decode_missing_file_is_unreadable(tmp_path: Path) -> None:
    assert decode_file(tmp_path / "gone.png", 32).skip == images.SKIP_UNREADABLE


def test_decode_decompression_bomb_hits_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    path = save_image(tmp_path / "big.png", 1, "L", (64, 64))
    result = decode_file(path, 32)
    assert result.skip == images.SKIP_TOO_LARGE
    assert (result.width, result.height) == (64, 64)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        (".DS_Store", images.SKIP_SYSTEM),
        ("Thumbs.db", images.SKIP_SYSTEM),
        ("._COVID-1.png", images.SKIP_SYSTEM),
        ("notes.txt", images.SKIP_NOT_IMAGE),
        ("volume.nii.gz", images.SKIP_NOT_IMAGE),
        ("x.PNG", None),
    ],
)
def test_file_skip_reason(name: str, reason: str | None) -> None:
    assert file_skip_reason(name) == reason


def test_decode_large_jpeg_uses_reduced_decoding(tmp_path: Path) -> None:
    path = save_image(tmp_path / "big.jpg", 4, "L", (640, 480))
    result = decode_file(path, 32)
    assert result.pixels is not None and result.pixels.shape == (32, 32)
    assert (result.width, result.height) == (640, 480)


def test_decode_a_pillow_bomb_is_skipped_as_too_large(tmp_path: Path) -> None:
    from tests.adversarial.files import bomb_png

    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png())  # 40000 x 40000 declared: Pillow itself refuses to open it
    assert decode_file(path, 32).skip == images.SKIP_TOO_LARGE


@pytest.mark.parametrize(
    ("size", "reason"),
    [
        ((1, 1), images.SKIP_TOO_SMALL),
        ((10_000, 10), images.SKIP_ASPECT),
        ((20, 200), images.SKIP_ASPECT),
        ((20, 100), None),
    ],
)
def test_decode_skips_images_that_cannot_be_radiographs(
    tmp_path: Path, size: tuple[int, int], reason: str | None
) -> None:
    path = tmp_path / "odd.png"
    Image.new("L", size, 90).save(path)
    result = decode_file(path, 32)
    assert result.skip == reason
    assert (result.width, result.height) == size
