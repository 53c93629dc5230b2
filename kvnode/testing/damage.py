"""Real damage to a node's data file, as disks do it: a flipped byte inside a stored record, a file
cut short, a broken meta page. Tests use these on real LMDB files, closed or open (the kernel's page
cache is shared, so a running node reads the damage at once).
"""

from __future__ import annotations

import os
from pathlib import Path

from kvnode.storage.lmdbfile import DATA_FILE


def data_file(data_dir: Path) -> Path:
    """The LMDB data file of a node's ``--data-dir``."""
    return data_dir / "lmdb" / DATA_FILE


def flip_byte(path: Path, needle: bytes, offset: int = 0, mask: int = 0x01) -> int:
    """XOR ``mask`` into the byte at ``offset`` of every occurrence of ``needle`` in the file
    (copy-on-write leaves old copies of a page behind; all of them rot). Returns how many."""
    if not 0 <= offset < len(needle):
        raise ValueError("the offset must fall inside the needle")
    content = path.read_bytes()
    hits = 0
    with path.open("r+b") as f:
        start = content.find(needle)
        while start >= 0:
            f.seek(start + offset)
            f.write(bytes([content[start + offset] ^ mask]))
            hits += 1
            start = content.find(needle, start + 1)
        f.flush()
        os.fsync(f.fileno())
    if not hits:
        raise ValueError(f"{needle!r} is not in {path}")
    return hits


def break_page_holding(path: Path, needle: bytes) -> int:
    """Clear the page-type flags of the LMDB page that holds ``needle`` (its first copy), as a torn
    write would: LMDB then answers MDB_CORRUPTED for what it holds. Returns the page number."""
    page_size = os.sysconf("SC_PAGE_SIZE")
    at = path.read_bytes().find(needle)
    if at < 0:
        raise ValueError(f"{needle!r} is not in {path}")
    page = at // page_size
    with path.open("r+b") as f:
        f.seek(page * page_size + 10)  # mp_flags, after the page number and mp_pad
        f.write(b"\x00\x00")
        f.flush()
        os.fsync(f.fileno())
    return page


def truncate(path: Path, fraction: float = 0.5) -> int:
    """Cut the file to ``fraction`` of its size; returns the new size."""
    size = int(path.stat().st_size * fraction)
    os.truncate(path, size)
    return size


def break_meta_page(path: Path, page: int = 0) -> None:
    """Overwrite the magic number of one of LMDB's two meta pages (page 1 starts one page in)."""
    with path.open("r+b") as f:
        f.seek(page * os.sysconf("SC_PAGE_SIZE") + 16)
        f.write(b"\x00\x00\x00\x00")
        f.flush()
        os.fsync(f.fileno())
