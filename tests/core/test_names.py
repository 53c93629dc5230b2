"""Addresses, node ids and backup ids, checked the same way everywhere they are typed."""

from __future__ import annotations

import pytest

from kvnode.core.errors import InvalidArgument
from kvnode.core.names import check_backup_id, new_backup_id, parse_host_port, validate_node_id


def test_host_port() -> None:
    assert parse_host_port("127.0.0.1:7000") == ("127.0.0.1", 7000)
    assert parse_host_port("kv-1.kv-headless.ns.svc:7000") == ("kv-1.kv-headless.ns.svc", 7000)
    assert parse_host_port("[::1]:7000") == ("::1", 7000)
    for bad in ("7000", "host:", "host:99999", "host:0", "a b:1"):
        with pytest.raises(ValueError, match=r"expected HOST:PORT|port must be"):
            parse_host_port(bad)


def test_a_refused_address_is_named_by_what_it_is_for() -> None:
    with pytest.raises(ValueError, match="invalid address for peer 'kv-1'"):
        parse_host_port("nowhere", what="address for peer 'kv-1'")


def test_node_ids() -> None:
    for good in ("kv-0", "a", "Node_1.x", "a" * 63):
        assert validate_node_id(good) == good
    for bad in ("", "-kv", "kv 0", "kv/0", "a" * 64):
        with pytest.raises(ValueError, match="invalid node id"):
            validate_node_id(bad)


def test_backup_ids_name_a_folder_and_nothing_outside_it() -> None:
    backup_id = new_backup_id()
    assert check_backup_id(backup_id) == backup_id
    for bad in ("..", "../x", "a/b", "", ".hidden"):
        with pytest.raises(InvalidArgument, match="invalid backup id"):
            check_backup_id(bad)
