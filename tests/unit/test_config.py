import pytest

from kvnode.config import Peer, parse_peers
from kvnode.core.names import parse_host_port
from kvnode.core.units import parse_duration, parse_size


def test_host_port() -> None:
    assert parse_host_port("127.0.0.1:7000") == ("127.0.0.1", 7000)
    assert parse_host_port("kv-1.kv-headless.ns.svc:7000") == ("kv-1.kv-headless.ns.svc", 7000)
    assert parse_host_port("[::1]:7000") == ("::1", 7000)
    for bad in ("7000", "host:", "host:99999", "a b:1"):
        with pytest.raises(ValueError, match=r"expected HOST:PORT|port must be"):
            parse_host_port(bad)


def test_peers() -> None:
    assert parse_peers("kv-0=127.0.0.1:7000, kv-1=h:7001") == (
        Peer("kv-0", "127.0.0.1:7000"),
        Peer("kv-1", "h:7001"),
    )
    assert parse_peers("") == ()
    with pytest.raises(ValueError, match="expected ID=HOST:PORT"):
        parse_peers("kv-0")
    with pytest.raises(ValueError, match="duplicate node id"):
        parse_peers("a=h:1,a=h:2")


def test_sizes_and_durations() -> None:
    assert parse_size("4096") == 4096
    assert parse_size("64MiB") == 64 << 20
    assert parse_size("1g") == 1 << 30
    assert parse_duration("250ms") == 0.25
    assert parse_duration("3h") == 10800
    with pytest.raises(ValueError, match="invalid size"):
        parse_size("lots")
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration("soon")
