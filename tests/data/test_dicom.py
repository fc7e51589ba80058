"""DICOM decoding: inversion, VOI LUT and windows, bit depths, skipped objects, privacy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cxr_tune.config import DataSource
from cxr_tune.data import DataOptions
from cxr_tune.data import dicom as dicom_io
from cxr_tune.data.cache import read_manifest
from cxr_tune.data.images import SKIP_NOT_IMAGE, decode_file, file_skip_reason
from cxr_tune.data.prepare import prepare
from tests.data.builders import pattern
from tests.data.dicom_builders import (
    OTHER_IDS,
    PATIENT_ID,
    PATIENT_NAME,
    write_image,
    write_structured_report,
)

SIZE = 32


def _stretch(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64)
    return np.rint((values - values.min()) / (values.max() - values.min()) * 255).astype(np.uint8)


def _decode(path: Path) -> np.ndarray:
    decoded = decode_file(path, SIZE)
    assert decoded.skip is None, decoded.skip
    assert decoded.pixels is not None and decoded.format == "DICOM"
    return decoded.pixels.astype(np.int64)


def test_decode_dicom_monochrome2_8bit_keeps_values(tmp_path: Path) -> None:
    stored = pattern(1, SIZE, SIZE)
    path = write_image(tmp_path / "a.dcm", stored)
    assert np.array_equal(_decode(path), stored)
    assert decode_file(path, SIZE).mode == "DICOM MONOCHROME2 8-bit"


def test_decode_dicom_monochrome1_is_inverted(tmp_path: Path) -> None:
    stored = pattern(2, SIZE, SIZE)
    path = write_image(tmp_path / "a.dcm", stored, photometric="MONOCHROME1")
    assert np.array_equal(_decode(path), 255 - stored.astype(np.int64))


def test_decode_dicom_12bit_without_window_uses_its_range(tmp_path: Path) -> None:
    # 12-bit values starting well above 0: scaled by the image's min..max, not clipped.
    stored = pattern(3, SIZE, SIZE).astype(np.uint16) * 16 + 97
    path = write_image(tmp_path / "a.dcm", stored, bits_stored=12)
    assert np.abs(_decode(path) - _stretch(stored)).max() <= 1


def test_decode_dicom_16bit_window_is_applied(tmp_path: Path) -> None:
    stored = (pattern(4, SIZE, SIZE).astype(np.uint16) * 250).astype(np.uint16)
    center, width = 30000.0, 20001.0
    path = write_image(tmp_path / "a.dcm", stored, bits_stored=16, window=(center, width))
    # PS3.3 C.11.2.1.2.1, LINEAR: ((x - (c - 0.5)) / (w - 1) + 0.5), clipped to [0, 1].
    unit = np.clip((stored - (center - 0.5)) / (width - 1) + 0.5, 0, 1)
    expected = np.rint(unit * 255)
    assert np.abs(_decode(path) - expected).max() <= 1
    # The window clips: values below c - w/2 are black, above c + w/2 white.
    assert (expected == 0).any() and (expected == 255).any()


def test_decode_dicom_monochrome1_16bit_window_is_inverted(tmp_path: Path) -> None:
    stored = (pattern(5, SIZE, SIZE).astype(np.uint16) * 200).astype(np.uint16)
    window = (25000.0, 40000.0)
    plain = _decode(write_image(tmp_path / "m2.dcm", stored, bits_stored=16, window=window))
    inverted = _decode(
        write_image(
            tmp_path / "m1.dcm", stored, bits_stored=16, window=window, photometric="MONOCHROME1"
        )
    )
    assert np.abs(inverted - (255 - plain)).max() <= 1


def test_decode_dicom_voi_lut_wins_over_the_raw_range(tmp_path: Path) -> None:
    stored = (pattern(6, SIZE, SIZE).astype(np.uint16) * 16).astype(np.uint16)  # 12-bit
    # A LUT that reverses and compresses: what the decoder shows must follow it.
    lut = (4095 - np.arange(4096)) ** 2 // 4096
    path = write_image(tmp_path / "a.dcm", stored, bits_stored=12, voi_lut=lut)
    expected = _stretch(lut[stored])
    assert np.abs(_decode(path) - expected).max() <= 1
    # Against the raw values the LUT reverses the order: the images correlate negatively.
    assert np.corrcoef(_decode(path).ravel(), stored.ravel())[0, 1] < -0.9


def test_decode_dicom_rescale_then_window_in_output_units(tmp_path: Path) -> None:
    stored = pattern(7, SIZE, SIZE).astype(np.uint16) * 8
    slope, intercept = 2.0, -1024.0
    center, width = 500.0, 1501.0
    path = write_image(
        tmp_path / "a.dcm",
        stored,
        bits_stored=12,
        rescale=(slope, intercept),
        window=(center, width),
    )
    values = stored * slope + intercept
    expected = np.rint(np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0, 1) * 255)
    assert np.abs(_decode(path) - expected).max() <= 1


def test_decode_dicom_structured_report_is_skipped(tmp_path: Path) -> None:
    path = write_structured_report(tmp_path / "report.dcm")
    decoded = decode_file(path, SIZE)
    assert decoded.pixels is None
    assert decoded.skip == dicom_io.SKIP_NO_PIXELS


def test_decode_dicom_multi_frame_is_skipped(tmp_path: Path) -> None:
    frames = np.stack([pattern(8, SIZE, SIZE), pattern(9, SIZE, SIZE)])
    path = write_image(tmp_path / "tomo.dcm", frames, frames=2)
    assert decode_file(path, SIZE).skip == dicom_io.SKIP_MULTI_FRAME


def test_decode_dicom_without_extension_found_by_preamble(tmp_path: Path) -> None:
    stored = pattern(10, SIZE, SIZE)
    path = write_image(tmp_path / "IM000001", stored)
    assert file_skip_reason(path.name) == SKIP_NOT_IMAGE  # the name alone says nothing
    assert file_skip_reason(path.name, path) is None
    assert np.array_equal(_decode(path), stored)


def test_decode_dicom_dcm_without_preamble(tmp_path: Path) -> None:
    stored = pattern(11, SIZE, SIZE)
    path = write_image(tmp_path / "old.DCM", stored, preamble=False)
    assert not dicom_io.file_has_preamble(str(path))
    assert np.array_equal(_decode(path), stored)


def test_decode_dicom_garbage_with_dcm_extension_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "broken.dcm"
    path.write_bytes(b"\x00" * 128 + b"DICM" + b"\xff" * 50)
    decoded = decode_file(path, SIZE)
    assert decoded.pixels is None and decoded.skip is not None


def test_decode_dicom_larger_image_is_resized(tmp_path: Path) -> None:
    stored = pattern(12, 96, 64)
    decoded = decode_file(write_image(tmp_path / "a.dcm", stored), SIZE)
    assert decoded.pixels is not None and decoded.pixels.shape == (SIZE, SIZE)
    assert (decoded.width, decoded.height) == (96, 64)


def _dicom_folder(root: Path) -> None:
    """An imagefolder of DICOM exports, with a report and a multi-frame object among them."""
    for k in range(6):
        stored = pattern(100 + k, 48, 48)
        write_image(root / "covid" / f"c{k}.dcm", stored, photometric="MONOCHROME1")
        wide = (pattern(200 + k, 48, 48).astype(np.uint16) * 16).astype(np.uint16)
        write_image(root / "normal" / f"IM{k:04d}", wide, bits_stored=12, window=(2000.0, 3000.0))
    write_structured_report(root / "covid" / "report.dcm")
    write_image(root / "normal" / "tomo.dcm", np.stack([stored, stored]), frames=2)


def test_prepare_dicom_folder_decodes_and_reports_skips(tmp_path: Path) -> None:
    _dicom_folder(tmp_path / "data")
    options = DataOptions(image_size=SIZE, cache_dir=tmp_path / "cache", workers=1)
    entry = prepare(DataSource(None, tmp_path / "data"), options)
    assert entry.meta["dataset"] == "imagefolder"
    assert sum(entry.meta["sizes"].values()) == 12
    skipped = entry.skipped()["counts"]
    assert skipped == {dicom_io.SKIP_NO_PIXELS: 1, dicom_io.SKIP_MULTI_FRAME: 1}
    assert set(entry.meta["image_modes"]) == {"DICOM MONOCHROME1 8-bit", "DICOM MONOCHROME2 12-bit"}
    rows = read_manifest(entry.path)
    assert {r["format"] for r in rows} == {"DICOM"}


def test_prepare_dicom_writes_no_patient_identifier(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cxr_tune.data.__main__ import main

    _dicom_folder(tmp_path / "data")
    cache = tmp_path / "cache"
    assert (
        main(["inspect", str(tmp_path / "data"), "--image-size", "32", "--cache-dir", str(cache)])
        == 0
    )
    assert (
        main(
            [
                "inspect",
                str(tmp_path / "data"),
                "--cache-dir",
                str(cache),
                "--image-size",
                "32",
                "--json",
            ]
        )
        == 0
    )
    out = capsys.readouterr()
    secrets = [PATIENT_NAME, PATIENT_ID, *OTHER_IDS, OTHER_IDS[1].replace("-", "")]
    secrets += [PATIENT_NAME.split("^")[0], PATIENT_NAME.split("^")[1]]
    written = [p for p in cache.rglob("*") if p.is_file()]
    assert {p.name for p in written} >= {"manifest.csv", "meta.json", "split.json", "skipped.json"}
    for path in written:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, f"{secret} found in {path.name}"
    for secret in secrets:
        assert secret not in out.out and secret not in out.err
    json.loads(out.out[out.out.index("{") :])  # the --json output is whole
