"""File helpers shared by every layer: a file's sha256 and writes that readers never see half done.

An artifact, a cached array, a figure or a report is written to a hidden temporary name in the same
folder and then renamed over its final name (``os.replace``, atomic on one file system), so a crash
or a concurrent reader finds either the old file or the new one, never a torn one. The temporary file
is removed when the write fails. Foundation layer: imports nothing from ``workbench``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks (artifacts and images can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def temp_path_for(path: str | os.PathLike[str], suffix: str = ".tmp") -> Path:
    """A unique hidden name beside ``path``: ``.<name>.<random hex><suffix>``.

    ``suffix`` lets a writer that appends its own extension (``np.save`` adds ``.npy``, Keras wants
    ``.keras``) get a name it keeps as is, and lets a cleanup find leftovers by pattern.
    """
    target = Path(path)
    return target.with_name(f".{target.name}.{uuid.uuid4().hex}{suffix}")


@contextmanager
def atomic_replace(path: str | os.PathLike[str], suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends normally, rename it over ``path``.

    The caller writes the temporary file in the block (any writer that takes a path). On an error,
    or if the rename fails, the temporary file is removed and the error propagates.
    """
    target = Path(path)
    tmp = temp_path_for(target, suffix)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(OSError):  # a failed cleanup must not hide the write's own error
            tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file and a rename; returns ``path``."""
    target = Path(path)
    with atomic_replace(target) as tmp:
        tmp.write_bytes(data)
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` via a temporary file and a rename; returns ``path``."""
    target = Path(path)
    with atomic_replace(target) as tmp:
        tmp.write_text(text, encoding=encoding)
    return target
