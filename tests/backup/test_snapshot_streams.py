"""The pieces of a bucket backup, without a bucket: the record stream and the signed manifest."""

from __future__ import annotations

from pathlib import Path

import pytest
import zstandard

from kvnode.backup import recordstream
from kvnode.backup.buckets import Census
from kvnode.backup.encryption import MAGIC, plain, seal
from kvnode.backup.encryption import load_key as load_encryption_key
from kvnode.backup.signing import BadSignature, load_key, open_signed, sign
from kvnode.core.errors import InvalidArgument, StartupError
from kvnode.storage.schema import encode_value
from tests.cluster.harness import record

KEY = b"k" * 32


def stored(count: int) -> list[tuple[bytes, bytes]]:
    records = [record(f"key{i:06d}", f"value {i}" * 20, hlc=i + 1, tomb=i % 7 == 0) for i in range(count)]
    return [(r.key, encode_value(r)) for r in records]


def test_records_come_back_as_they_went_in_with_their_counts() -> None:
    pairs = stored(20_000)
    blocks = list(recordstream.encode(pairs))
    assert len(blocks) >= 1 and sum(map(len, blocks)) < sum(len(k) + len(v) for k, v in pairs) / 3
    census = Census()
    assert list(census.watch(recordstream.decode(blocks))) == pairs
    assert (census.records, census.tombstones, census.corrupt) == (20_000, 2858, {})


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda data: data[: len(data) // 2], "truncated after"),
        (lambda data: b"\x00" * 8 + data[8:], "does not decompress"),
        (lambda data: b"", "bad magic"),
    ],
)
def test_a_damaged_stream_is_refused_saying_how(damage: object, message: str) -> None:
    data = b"".join(recordstream.encode(stored(5000)))
    with pytest.raises(InvalidArgument, match=message):
        list(recordstream.decode([damage(data)]))  # type: ignore[operator]


def test_a_stream_cut_at_a_record_boundary_lacks_its_trailer() -> None:
    """Without the trailer, losing the last records would go unnoticed by the decoder."""
    whole = zstandard.ZstdDecompressor().decompressobj().decompress(b"".join(recordstream.encode(stored(10))))
    cut = zstandard.ZstdCompressor().compress(whole[:-8])  # every record, no trailer
    with pytest.raises(InvalidArgument, match="truncated after 10 records"):
        list(recordstream.decode([cut]))


def test_a_record_failing_its_checksum_is_counted_apart() -> None:
    pairs = stored(3)
    key, value = pairs[1]
    pairs[1] = (key, value[:-1] + bytes([value[-1] ^ 1]))
    census = Census()
    assert [k for k, _ in census.watch(recordstream.decode(recordstream.encode(pairs)))] == [
        pairs[0][0],
        pairs[2][0],
    ]
    assert list(census.corrupt) == [key]


def test_a_signed_manifest_opens_only_unchanged_and_with_its_key() -> None:
    fields = {"backup_id": "b1", "keys": 3, "objects": [{"name": "snapshot.zst", "size": 9}]}
    document = sign(fields, KEY)
    assert open_signed(document, KEY) == fields
    with pytest.raises(BadSignature, match="signed with another key"):
        open_signed(document, b"x" * 32)
    with pytest.raises(BadSignature, match="does not match"):
        open_signed(document.replace(b'"keys": 3', b'"keys": 4'), KEY)
    with pytest.raises(BadSignature, match="carries no signature"):
        open_signed(b'{"keys": 3}', KEY)
    with pytest.raises(BadSignature, match="not valid JSON"):
        open_signed(b"{", KEY)


def test_the_key_file_must_exist_and_hold_enough_bytes(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="cannot read the backup HMAC key file"):
        load_key(str(tmp_path / "missing"))
    (tmp_path / "short").write_text("secret\n")
    with pytest.raises(StartupError, match="has 6 bytes; use at least 16"):
        load_key(str(tmp_path / "short"))
    (tmp_path / "good").write_text(" " + "k" * 32 + "\n")
    assert load_key(str(tmp_path / "good")) == KEY


def test_sealed_blocks_open_only_whole_in_order_and_with_their_key() -> None:
    key = bytes(range(32))
    blocks = [b"block %d " % i * 1000 for i in range(4)]
    data = b"".join(seal(blocks, key))
    assert data.startswith(MAGIC) and blocks[0] not in data
    assert list(plain([data[:5], data[5:]], key)) == blocks
    assert b"".join(plain(blocks, key)) == b"".join(blocks)  # not sealed: passed on as it is
    frames = 4 + 8016  # length and sealed block (1000 * 8 bytes and the tag)
    cases = {
        "another key": (data, bytes(32), "block 0 does not open"),
        "a changed byte": (data[:40] + bytes([data[40] ^ 1]) + data[41:], key, "block 0 does not open"),
        "the last block dropped": (data[: len(data) - frames - 8], key, "does not open|truncated"),
        "cut inside a block": (data[:-10], key, "truncated after 3 blocks"),
    }
    for what, (damaged, with_key, message) in cases.items():
        with pytest.raises(InvalidArgument, match=message):
            list(plain([damaged], with_key))
        print("refused:", what)
    with pytest.raises(InvalidArgument, match="no --backup-encryption-key-file"):
        list(plain([data], None))


def test_the_encryption_key_is_64_hex_digits(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("ab" * 32 + "\n")
    assert load_encryption_key(str(tmp_path / "key")) == b"\xab" * 32
    (tmp_path / "short").write_text("ab" * 16)
    with pytest.raises(StartupError, match="must be 64 hex digits"):
        load_encryption_key(str(tmp_path / "short"))
