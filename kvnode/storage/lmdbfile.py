"""A look at an LMDB data file before LMDB maps it.

LMDB maps the whole file and reads pages straight from memory. If the file is shorter than its own
metadata says (truncated by a full or failing disk, a bad copy, an interrupted restore), the first
read of a page past its end raises SIGBUS, which kills a Python process before any handler runs:
the node dies at start with an empty log. So every opener checks the file first, with plain reads:
both meta pages must be meta pages with LMDB's magic and data version, and every page the newest of
them counts must lie inside the file. A page pointer past that count is LMDB's own check
(``MDB_PAGE_NOTFOUND``), and damage inside a record is the record checksum's
(:mod:`kvnode.storage.schema`).

The layout, from LMDB's ``mdb.c`` (0.9, 64-bit, native byte order): each meta page starts with a
16-byte page header (``mp_flags`` at byte 10, ``P_META`` = 0x08), then ``MDB_meta``: ``mm_magic``
(0xBEEFC0DE), ``mm_version`` (1), ``mm_address``, ``mm_mapsize``, two 48-byte ``MDB_db`` (the first
one's ``md_pad`` holds the page size, each ends with its root page), ``mm_last_pg`` and
``mm_txnid``. LMDB uses the meta page with the higher ``mm_txnid``.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from kvnode.core.errors import StartupError

DATA_FILE = "data.mdb"
MAGIC = 0xBEEFC0DE
DATA_VERSION = 1
_P_META = 0x08
_PAGE_FLAGS = struct.Struct("=H")  # mp_flags, at byte 10 of a page
_META = struct.Struct("=IIQQ")  # mm_magic, mm_version, mm_address, mm_mapsize; at byte 16
_DB = struct.Struct("=IHHQQQQQ")  # md_pad, md_flags, md_depth, pages x3, md_entries, md_root
_TAIL = struct.Struct("=QQ")  # mm_last_pg, mm_txnid
_FLAGS_AT, _META_AT = 10, 16
_DBS_AT = _META_AT + _META.size
_TAIL_AT = _DBS_AT + 2 * _DB.size
_META_BYTES = _TAIL_AT + _TAIL.size
_NO_PAGE = (1 << 64) - 1  # P_INVALID: the root of an empty tree
_PAGE_SIZES = range(9, 17)  # LMDB pages are 512 B to 64 KiB, powers of two


class DamagedFile(StartupError):
    """An LMDB data file that LMDB must not map: the message says what is wrong with it."""


@dataclass(frozen=True)
class MetaPage:
    page_size: int
    last_page: int
    txnid: int
    roots: tuple[int, int]


def _meta(path: Path, page: bytes, number: int) -> MetaPage:
    """One meta page, checked the way LMDB's ``mdb_env_read_header`` checks it, and more."""
    where = f"{path}: meta page {number}"
    if len(page) < _META_BYTES:
        raise DamagedFile(f"{where} is cut short")
    if not _PAGE_FLAGS.unpack_from(page, _FLAGS_AT)[0] & _P_META:
        raise DamagedFile(f"{where} is not a meta page")
    magic, version, _, _ = _META.unpack_from(page, _META_AT)
    if magic != MAGIC:
        raise DamagedFile(f"{where} has magic {magic:#x}, not LMDB's {MAGIC:#x}")
    if version != DATA_VERSION:
        raise DamagedFile(f"{where} has data version {version}, not {DATA_VERSION}")
    free = _DB.unpack_from(page, _DBS_AT)
    main = _DB.unpack_from(page, _DBS_AT + _DB.size)
    page_size = free[0]
    if page_size not in {1 << n for n in _PAGE_SIZES}:
        raise DamagedFile(f"{where} gives a page size of {page_size} bytes")
    last_page, txnid = _TAIL.unpack_from(page, _TAIL_AT)
    roots = (free[-1], main[-1])
    for root in roots:
        if root != _NO_PAGE and root > last_page:
            raise DamagedFile(f"{where} names root page {root}, past its last page {last_page}")
    return MetaPage(page_size, last_page, txnid, roots)


def check_data_file(folder: Path) -> None:
    """Raise DamagedFile if ``folder``'s LMDB data file (when there is one) is not whole.

    Never maps the file; reads its first two pages. Errors reading it (EIO) are damage too: LMDB
    would hit the same sectors.
    """
    path = folder / DATA_FILE
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise DamagedFile(f"{path} is empty (0 bytes): it holds not even LMDB's meta pages")
            first = _meta(path, f.read(_META_BYTES), 0)
            f.seek(first.page_size)
            second = _meta(path, f.read(_META_BYTES), 1)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise DamagedFile(f"{path} cannot be read: {exc.strerror or exc}") from None
    if second.page_size != first.page_size:
        raise DamagedFile(
            f"{path}: its meta pages disagree on the page size ({first.page_size}, {second.page_size})"
        )
    newest = second if second.txnid > first.txnid else first
    needed = (newest.last_page + 1) * newest.page_size
    if size < needed:
        raise DamagedFile(
            f"{path} is truncated: it holds {size} bytes, but its metadata (transaction "
            f"{newest.txnid}) counts {newest.last_page + 1} pages of {newest.page_size} bytes "
            f"({needed} bytes)"
        )
