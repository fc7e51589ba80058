"""Bad files as they turn up in real downloads, written from scratch (no data ships)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from tests.data.builders import pattern, save_image


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def bomb_png(width: int = 40_000, height: int = 40_000) -> bytes:
    """A valid PNG header declaring width x height 8-bit gray pixels (1.6 GP by default),
    followed by a few rows of compressed zeros: tiny on disk, ruinous if decoded."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width + 1) * 4, 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", rows)
        + _chunk(b"IEND", b"")
    )


def write_bad_images(folder: Path) -> dict[str, str]:
    """Every kind of bad or odd image file in ``folder``; returns file name -> what it is."""
    folder.mkdir(parents=True, exist_ok=True)
    gray = Image.fromarray(pattern(7))
    made = {
        "zero.png": "zero-byte",
        "truncated.png": "truncated PNG",
        "truncated.jpg": "truncated JPEG",
        "png_named.jpg": "PNG bytes with a .jpg extension",
        "page.png": "HTML saved as .png",
        "bomb.png": "decompression bomb",
        "cmyk.jpg": "CMYK JPEG",
        "palette.png": "palette PNG",
        "sixteen.png": "16-bit PNG",
        "one_pixel.png": "1x1",
        "sliver.png": "10000x10",
        "dangling.png": "broken symlink",
        "folder.png": "a folder named like an image",
    }
    (folder / "zero.png").write_bytes(b"")
    data = png_bytes(gray)
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    data = jpeg_bytes(gray)
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "png_named.jpg").write_bytes(png_bytes(Image.fromarray(pattern(8))))
    (folder / "page.png").write_text("<!DOCTYPE html><html><body>Rate limit exceeded</body></html>")
    (folder / "bomb.png").write_bytes(bomb_png())
    save_image(folder / "cmyk.jpg", 9, "CMYK")
    save_image(folder / "palette.png", 10, "P")
    save_image(folder / "sixteen.png", 11, "I;16")
    Image.new("L", (1, 1), 128).save(folder / "one_pixel.png")
    Image.fromarray(np.full((10, 10_000), 90, dtype=np.uint8)).save(folder / "sliver.png")
    (folder / "dangling.png").symlink_to(folder / "gone" / "nothing.png")
    (folder / "folder.png").mkdir()
    save_image(folder / "folder.png" / "inside.png", 12)
    return made
