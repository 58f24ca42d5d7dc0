"""An image's size read from its first bytes, before anything decodes it (pure).

A 400 KB PNG can hold a 20000 x 20000 image that takes 1.2 GB to decode: a caller that bounds the
pixels it decodes reads the size here first. JPEG (its SOF marker), PNG (IHDR) and BMP (its info
header) are read; other formats give None.
"""

from __future__ import annotations

__all__ = ["image_size", "jpeg_size"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from the JPEG's SOF marker, or None when it cannot be found."""
    i, n = 2, len(data)
    if n < 4 or data[:2] != b"\xff\xd8":
        return None
    while i + 9 < n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return int.from_bytes(data[i + 5 : i + 7], "big"), int.from_bytes(data[i + 7 : i + 9], "big")
        i += 2 + length
    return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) of a JPEG, PNG or BMP from its header; None for other or cut-short bytes."""
    if data[:2] == b"\xff\xd8":
        return jpeg_size(data)
    if data[:8] == _PNG_SIGNATURE and len(data) >= 24 and data[12:16] == b"IHDR":
        return int.from_bytes(data[20:24], "big"), int.from_bytes(data[16:20], "big")
    if data[:2] == b"BM" and len(data) >= 26:
        width = int.from_bytes(data[18:22], "little", signed=True)
        height = int.from_bytes(data[22:26], "little", signed=True)  # negative: stored top-down
        return abs(height), abs(width)
    return None
