"""Small presentation helpers for the pages (image loading and zoom); no workbench state here."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageOps

ZOOMS = (1.0, 1.5, 2.0, 3.0, 4.0)


def load_image(path: str, zoom: float = 1.0) -> Image.Image:
    """An RGB image from disk, EXIF-rotated, cropped around its centre by ``zoom`` (1 = whole image).

    Raises FileNotFoundError / OSError with the path when the file is missing or unreadable.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image not found: {p}")
    with Image.open(p) as img:
        out = ImageOps.exif_transpose(img).convert("RGB")
    if zoom > 1.0:
        w, h = out.size
        cw, ch = max(1, round(w / zoom)), max(1, round(h / zoom))
        left, top = (w - cw) // 2, (h - ch) // 2
        out = out.crop((left, top, left + cw, top + ch)).resize((w, h), Image.Resampling.LANCZOS)
    return out
