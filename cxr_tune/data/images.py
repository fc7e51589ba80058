"""Robust image decoding: any file a dataset ships -> one 8-bit grayscale square, or a skip reason.

Real collections mix modes (``L``, ``LA``, ``P``, ``RGB``, ``RGBA``, ``CMYK``, 16-bit ``I;16`` and
32-bit ``I``), formats (PNG, JPEG with any extension case) and sizes, and carry the odd truncated,
zero-byte or non-image file. :func:`decode_file` turns each file into either pixels or the reason it
was skipped; it never raises for a bad file.

Geometry follows the paper's preset (torchvision ``Resize(size)`` + ``CenterCrop(size)``): the
shorter side is resized to ``size`` (bilinear, antialiased) and the centre square is kept.

Decompression bombs: a file whose header declares more than :data:`MAX_PIXELS` pixels is skipped
with the reason :data:`SKIP_TOO_LARGE` before any pixel is decoded; so are files too small
(:data:`MIN_SIDE`) or too elongated (:data:`MAX_ASPECT`) to be a radiograph. A skip, not an error, because
one hostile or broken file must not stop a 20,000-image dataset; the skip report lists it.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

import cxr_tune.data.dicom as dicom

# Extensions the parsers treat as images, compared case-insensitively (".PNG", ".Jpg" ...).
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".tif", ".tiff"}
)
# Files that operating systems drop into folders; never images, never worth a warning each.
SYSTEM_FILES: frozenset[str] = frozenset({".ds_store", "thumbs.db", "desktop.ini", "ehthumbs.db"})
# 100 MP: above the largest radiographs (~4300x3500 = 15 MP) by a wide margin, below what would
# exhaust a worker's memory when decoded as 32-bit.
MAX_PIXELS = 100_000_000
# Side of the grayscale thumbnail kept for near-duplicate hashing.
THUMB_SIZE = 32
# Radiographs are hundreds of pixels a side and at most ~2:1; a 1x1 pixel or a 10000x10 strip
# is a placeholder or a broken export, and resized to a square it becomes a flat or smeared
# "image" that trains the model on nothing. Such files are skipped and listed.
MIN_SIDE = 16
MAX_ASPECT = 8.0

SKIP_SYSTEM = "system or hidden file"
SKIP_NOT_IMAGE = "not an image file (extension)"
SKIP_EMPTY = "empty file (0 bytes)"
SKIP_UNREADABLE = "unreadable file"
SKIP_UNDECODABLE = "not a decodable image"
SKIP_TRUNCATED = "truncated or corrupt image data"
SKIP_TOO_LARGE = f"too many pixels (over {MAX_PIXELS:,}; decompression bomb limit)"
SKIP_TOO_SMALL = f"too small to be a radiograph (a side under {MIN_SIDE} px)"
SKIP_ASPECT = f"not radiograph-shaped (one side over {MAX_ASPECT:g} times the other)"
# One grey level (all black, all white, a flat export): no radiograph, and its near-duplicate
# signature is empty, so its copies could not be grouped. Datasets skip it; prediction does not
# (the out-of-distribution flag is what answers for such an image there).
SKIP_UNIFORM = "uniform image (a single grey level)"

# Modes holding more than 8 bits per pixel; scaled by their real range, not clipped.
_WIDE_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})


@dataclass(frozen=True)
class Decoded:
    """One decoded file.

    Attributes:
        pixels: uint8 (size, size) grayscale, or None when skipped.
        thumb: uint8 (THUMB_SIZE, THUMB_SIZE) grayscale of the whole image (for hashing).
        mode: the file's PIL mode ("L", "RGB", "I;16", ...); "" when it could not be opened.
        width, height: the file's size in pixels (0 when unknown).
        format: "PNG", "JPEG", ...; "" when unknown.
        digest: blake2b of the file's bytes (content identity for the dataset hash).
        skip: the reason the file was skipped, or None.
    """

    pixels: np.ndarray | None
    thumb: np.ndarray | None
    mode: str = ""
    width: int = 0
    height: int = 0
    format: str = ""
    digest: str = ""
    skip: str | None = None


def file_skip_reason(name: str, path: str | Path | None = None) -> str | None:
    """Why a file found in a class folder is not an image candidate.

    Judged by the name (image or DICOM extension, any case); when ``path`` is given, a file
    with another extension (or none, as DICOM files often have) is still a candidate if it
    carries the DICOM preamble.
    """
    lower = name.lower()
    if lower in SYSTEM_FILES or lower.startswith("."):
        return SKIP_SYSTEM
    extension = os.path.splitext(lower)[1]
    if extension in IMAGE_EXTENSIONS or dicom.is_dicom_name(lower):
        return None
    if path is not None and dicom.file_has_preamble(str(path)):
        return None
    return SKIP_NOT_IMAGE


def decode_file(path: str | Path, size: int) -> Decoded:
    """Decode one file into a ``size`` x ``size`` uint8 grayscale image, or say why not.

    Args:
        path: the image file.
        size: side of the output square.

    Returns:
        A :class:`Decoded`; ``skip`` is set (and ``pixels`` is None) for empty, unreadable,
        undecodable, truncated or oversized files. Never raises for a bad file.
    """
    try:
        data = Path(path).read_bytes()
    except OSError:
        return Decoded(None, None, skip=SKIP_UNREADABLE)
    if not data:
        return Decoded(None, None, skip=SKIP_EMPTY)
    return decode_bytes(data, size, dicom_name=dicom.is_dicom_name(Path(path).name))


def decode_bytes(data: bytes, size: int, *, dicom_name: bool = False) -> Decoded:
    """Like :func:`decode_file`, for a file's bytes already in memory.

    DICOM (the ``DICM`` preamble, or ``dicom_name`` for a ``.dcm`` file without one) goes
    through :mod:`cxr_tune.data.dicom`; everything else through Pillow.
    """
    digest = hashlib.blake2b(data, digest_size=16).hexdigest()
    if dicom_name or dicom.has_preamble(data):
        return _decode_dicom(data, size, digest)
    with warnings.catch_warnings():
        # Pillow warns about palette transparency and large images; both are handled here.
        warnings.simplefilter("ignore")
        try:
            image = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError:  # Pillow's own limit (2x its warning size)
            return Decoded(None, None, digest=digest, skip=SKIP_TOO_LARGE)
        except (UnidentifiedImageError, OSError, SyntaxError):
            return Decoded(None, None, digest=digest, skip=SKIP_UNDECODABLE)
        width, height = image.size
        found = Decoded(None, None, image.mode, width, height, image.format or "", digest)
        shape_problem = _shape_skip_reason(width, height)
        if shape_problem is not None:
            return replace(found, skip=shape_problem)
        try:
            gray = to_gray(_load_first_frame(image, size))
        except Image.DecompressionBombError:
            return replace(found, skip=SKIP_TOO_LARGE)
        except (OSError, SyntaxError, ValueError, EOFError, IndexError):
            return replace(found, skip=SKIP_TRUNCATED)
    resized = resize_shorter(gray, size)
    pixels = np.asarray(center_crop(resized, size), dtype=np.uint8)
    return replace(found, pixels=pixels, thumb=make_thumb(resized))


def _shape_skip_reason(width: int, height: int) -> str | None:
    """Why an image of this size is not decoded (too many pixels, too small, a strip)."""
    if width * height > MAX_PIXELS:
        return SKIP_TOO_LARGE
    if max(width, height) > MAX_ASPECT * min(width, height):
        return SKIP_ASPECT
    if min(width, height) < MIN_SIDE:
        return SKIP_TOO_SMALL
    return None


def _decode_dicom(data: bytes, size: int, digest: str) -> Decoded:
    """A DICOM file through pydicom; only its pixels are kept (never a header value)."""
    read = dicom.decode_dicom(data, MAX_PIXELS)
    if read.gray is None:
        return Decoded(None, None, read.mode, format="DICOM", digest=digest, skip=read.skip)
    height, width = read.gray.shape
    found = Decoded(None, None, read.mode, width, height, "DICOM", digest)
    shape_problem = _shape_skip_reason(width, height)
    if shape_problem is not None:
        return replace(found, skip=shape_problem)
    resized = resize_shorter(Image.fromarray(read.gray, mode="L"), size)
    pixels = np.asarray(center_crop(resized, size), dtype=np.uint8)
    return replace(found, pixels=pixels, thumb=make_thumb(resized))


def _load_first_frame(image: Image.Image, size: int) -> Image.Image:
    """Load pixel data (the first frame of multi-frame files), decoding JPEGs at reduced scale."""
    if image.format == "JPEG" and image.mode in ("L", "RGB", "CMYK", "YCbCr"):
        # DCT scaling: decode big JPEGs at 1/2, 1/4 or 1/8 while keeping the shorter side >= the
        # doubled target, so the final antialiased resize still does the real filtering.
        width, height = image.size
        scale = 2 * size / min(width, height)
        image.draft(image.mode, (max(1, int(width * scale)), max(1, int(height * scale))))
    image.seek(0)
    image.load()
    return image


def to_gray(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit grayscale ``L``.

    Colour modes use the ITU-R 601 luma weights (Pillow's ``convert("L")``); alpha is dropped.
    16- and 32-bit modes are scaled linearly from the image's own min..max to 0..255, so a 12-bit
    radiograph keeps its contrast instead of being clipped to white.
    """
    if image.mode == "L":
        return image
    if image.mode in _WIDE_MODES:
        return _scale_wide(image)
    if image.mode == "LA":
        return image.getchannel("L")
    if image.mode in ("P", "PA"):
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "RGBa", "La"):
        image = image.convert("RGB")
    return image.convert("L")


def _scale_wide(image: Image.Image) -> Image.Image:
    values = np.asarray(image).astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return Image.new("L", image.size, 0)
    scaled = (values - low) * (255.0 / (high - low))
    return Image.fromarray(np.rint(scaled).astype(np.uint8), mode="L")


def resize_shorter(image: Image.Image, size: int) -> Image.Image:
    """Resize so the shorter side is ``size``, as torchvision's ``Resize(size)`` does on PIL."""
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    if short == size:
        return image
    new_long = int(size * long / short)
    new_size = (size, new_long) if width <= height else (new_long, size)
    return image.resize(new_size, Image.Resampling.BILINEAR)


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """Keep the centre ``size`` x ``size`` square, as torchvision's ``CenterCrop(size)`` does."""
    width, height = image.size
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def make_thumb(image: Image.Image) -> np.ndarray:
    """A THUMB_SIZE square thumbnail of the whole (uncropped) image, for perceptual hashing."""
    thumb = image.resize((THUMB_SIZE, THUMB_SIZE), Image.Resampling.BILINEAR)
    return np.asarray(thumb, dtype=np.uint8)


def is_uniform(pixels: np.ndarray) -> bool:
    """Whether a decoded image has a single grey level."""
    return bool(pixels.size) and int(pixels.min()) == int(pixels.max())
