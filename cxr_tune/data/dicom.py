"""DICOM radiographs -> 8-bit grayscale through pydicom; non-image objects skipped with a reason.

A hospital's own images arrive as DICOM: ``.dcm`` files, or files of any name whose bytes 128-131
read ``DICM`` (the Part 10 preamble). :func:`decode_dicom` turns one file into display-ready
pixels the way a viewer would:

1. the stored values go through the Modality LUT (rescale slope and intercept, or a LUT);
2. then through the file's VOI transform: its VOI LUT where it has one, else its first window
   (centre/width, with the LINEAR, LINEAR_EXACT or SIGMOID function of PS3.3 C.11.2), else the
   image's own min..max for data wider than 8 bits;
3. ``MONOCHROME1`` (white is low) is inverted, so every image has bone bright;
4. the result is scaled to 0..255.

Structured reports, presentation states and other objects without pixel data are skipped, and so
are multi-frame objects (tomosynthesis, cine) that hold no single projection.

Privacy: only the pixel module is read. No value of the header (patient name, id, dates, ...) is
returned, logged or put into a skip reason; skip reasons are fixed strings. pydicom's warnings
and log messages, which can quote header values, are silenced while a file is read.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

# Extensions that mark a DICOM file by name (compared case-insensitively).
DICOM_EXTENSIONS: frozenset[str] = frozenset({".dcm", ".dicom", ".dic"})
# A Part 10 file: 128-byte preamble, then these four bytes.
PREAMBLE_OFFSET = 128
MAGIC = b"DICM"

SKIP_NO_PIXELS = "DICOM object without pixel data (structured report or other non-image)"
SKIP_MULTI_FRAME = "DICOM multi-frame object (no single projection)"
SKIP_COLOUR = "DICOM with an unsupported photometric interpretation"
SKIP_NOT_DICOM = "not a readable DICOM file"
SKIP_COMPRESSED = (
    "DICOM pixel data in a compressed transfer syntax that cannot be decoded here "
    "(install pylibjpeg or python-gdcm)"
)
SKIP_BAD_PIXELS = "DICOM pixel data unreadable or inconsistent with its header"
SKIP_TOO_LARGE = "DICOM image with too many pixels (decompression bomb limit)"

_MONOCHROME = frozenset({"MONOCHROME1", "MONOCHROME2"})
_COLOUR = frozenset(
    {"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420", "PALETTE COLOR"}
)


@dataclass(frozen=True)
class DicomPixels:
    """One decoded DICOM image, or the reason it was skipped.

    Attributes:
        gray: uint8 (rows, columns) display-ready grayscale, or None when skipped.
        mode: a short description for the cache's image-mode counts (``DICOM MONOCHROME1
            12-bit``); never a header value that could identify a patient.
        skip: a fixed skip reason, or None.
    """

    gray: np.ndarray | None
    mode: str = "DICOM"
    skip: str | None = None


def has_preamble(data: bytes) -> bool:
    """True when ``data`` starts like a DICOM Part 10 file (``DICM`` at byte 128)."""
    return data[PREAMBLE_OFFSET : PREAMBLE_OFFSET + len(MAGIC)] == MAGIC


def is_dicom_name(name: str) -> bool:
    """True when the file name has a DICOM extension (``.dcm``, any case)."""
    lower = name.lower()
    return any(lower.endswith(ext) for ext in DICOM_EXTENSIONS)


def file_has_preamble(path: str) -> bool:
    """True when the file at ``path`` has the DICOM preamble (reads 132 bytes; False on error)."""
    try:
        with open(path, "rb") as handle:
            return has_preamble(handle.read(PREAMBLE_OFFSET + len(MAGIC)))
    except OSError:
        return False


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence pydicom while reading: its warnings and log lines may quote header values."""
    logger = logging.getLogger("pydicom")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def decode_dicom(data: bytes, max_pixels: int) -> DicomPixels:
    """Decode the bytes of one DICOM file into display-ready 8-bit grayscale.

    Args:
        data: the file's bytes.
        max_pixels: skip (with ``too_large``) an image declaring more pixels than this.

    Returns:
        The pixels, or the reason the file is not used. Never raises for a bad file.
    """
    with _quiet():
        try:
            ds = _read(data)
        except Exception:  # pydicom raises many types for malformed files
            return DicomPixels(None, skip=SKIP_NOT_DICOM)
        if int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0) > max_pixels:
            return DicomPixels(None, skip=SKIP_TOO_LARGE)
        return _pixels_of(ds)


def _read(data: bytes) -> Any:
    import pydicom

    # force=True reads files without the preamble (older or raw .dcm); only the header is
    # parsed here, pixel data is decoded on demand below.
    return pydicom.dcmread(io.BytesIO(data), force=True)


def _pixels_of(ds: Any) -> DicomPixels:
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        return DicomPixels(None, skip=SKIP_NO_PIXELS)
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        return DicomPixels(None, skip=SKIP_MULTI_FRAME)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric not in _MONOCHROME and photometric not in _COLOUR:
        return DicomPixels(None, skip=SKIP_COLOUR)
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 8)) or 8)
    mode = f"DICOM {photometric if photometric in _MONOCHROME else 'colour'} {bits}-bit"
    try:
        stored = ds.pixel_array
    except (NotImplementedError, RuntimeError) as err:
        # pydicom says "unable to decode" when no plugin handles the transfer syntax.
        compressed = "decode" in str(err).lower() or "plugin" in str(err).lower()
        return DicomPixels(None, mode, SKIP_COMPRESSED if compressed else SKIP_BAD_PIXELS)
    except Exception:
        return DicomPixels(None, mode, SKIP_BAD_PIXELS)
    if stored.ndim == 3 and photometric in _COLOUR:
        return DicomPixels(_colour_to_gray(stored, bits), mode)
    if stored.ndim != 2:
        return DicomPixels(None, mode, SKIP_MULTI_FRAME)
    try:
        unit = _display_values(stored, ds, bits)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, NotImplementedError):
        return DicomPixels(None, mode, SKIP_BAD_PIXELS)
    if photometric == "MONOCHROME1":
        unit = 1.0 - unit
    return DicomPixels(_to_uint8(unit), mode)


def _display_values(stored: np.ndarray, ds: Any, bits: int) -> np.ndarray:
    """Modality LUT, then VOI (LUT, window, or min..max): values in [0, 1], float64."""
    from pydicom.pixels import apply_modality_lut
    from pydicom.pixels.processing import apply_voi

    rescaled = "RescaleSlope" in ds or "RescaleIntercept" in ds or "ModalityLUTSequence" in ds
    values = apply_modality_lut(stored, ds) if rescaled else stored
    if ds.get("VOILUTSequence"):
        # The LUT indexes integers; its own output range (LUT data min..max) maps to 0..1.
        looked_up = apply_voi(np.rint(values).astype(np.int64), ds, index=0)
        return _stretch(looked_up.astype(np.float64))
    window = _first_window(ds)
    if window is not None:
        center, width = window
        return _window(values.astype(np.float64), center, width, _voi_function(ds))
    if bits <= 8 and not rescaled:
        return stored.astype(np.float64) / 255.0
    return _stretch(values.astype(np.float64))


def _first_window(ds: Any) -> tuple[float, float] | None:
    """The first (centre, width) pair of the header, or None when it has none that is valid."""
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None
    center, width = ds.WindowCenter, ds.WindowWidth
    center = float(center[0] if _is_multi(center) else center)
    width = float(width[0] if _is_multi(width) else width)
    return (center, width) if width > 0 else None


def _is_multi(value: Any) -> bool:
    return isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue"


def _voi_function(ds: Any) -> str:
    return str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()


def _window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """A VOI window (PS3.3 C.11.2.1.2 / C.11.2.1.3) mapped to [0, 1]."""
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR_EXACT":
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    # LINEAR (the default, and what an unknown function falls back to).
    width = max(width - 1.0, 1e-9)
    return np.clip((values - (center - 0.5)) / width + 0.5, 0.0, 1.0)


def _stretch(values: np.ndarray) -> np.ndarray:
    """The image's own min..max to [0, 1] (a flat image becomes black)."""
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros_like(values)
    return (values - low) / (high - low)


def _colour_to_gray(rgb: np.ndarray, bits: int) -> np.ndarray:
    """ITU-R 601 luma of an RGB array (pydicom converts YBR to RGB), scaled to 8 bits."""
    weights = np.array([0.299, 0.587, 0.114])
    luma = rgb[..., :3].astype(np.float64) @ weights
    return _to_uint8(luma / float(2**bits - 1))


def _to_uint8(unit: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(unit, 0.0, 1.0) * 255.0).astype(np.uint8)
