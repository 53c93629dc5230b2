"""Consistency levels: how many answers each needs, how a request's level is resolved, and which
operations LINEARIZABLE refuses."""

from __future__ import annotations

import pytest

from kvnode.api.v1 import types_pb2
from kvnode.core.errors import InvalidArgument
from kvnode.core.levels import Level, quorum, resolve, single_key_only


def test_quorum_is_a_majority_so_two_quorums_always_overlap() -> None:
    assert [quorum(n) for n in range(1, 8)] == [1, 2, 2, 3, 3, 4, 4]
    assert all(2 * quorum(n) > n for n in range(1, 100))


@pytest.mark.parametrize("replicas", [1, 2, 3, 5])
def test_each_level_needs_its_number_of_answers(replicas: int) -> None:
    assert Level.ONE.needed(replicas) == 1
    assert Level.ALL.needed(replicas) == replicas
    assert Level.QUORUM.needed(replicas) == Level.LINEARIZABLE.needed(replicas) == quorum(replicas)


def test_levels_parse_by_name_in_any_case() -> None:
    assert Level.parse(" quorum ") is Level.QUORUM
    assert Level.parse("LINEARIZABLE") is Level.LINEARIZABLE
    with pytest.raises(ValueError, match="unknown consistency level 'most'"):
        Level.parse("most")


def test_an_unspecified_level_resolves_to_the_default_and_an_unknown_one_is_refused() -> None:
    assert resolve(types_pb2.CONSISTENCY_UNSPECIFIED, Level.ALL) is Level.ALL
    assert resolve(types_pb2.CONSISTENCY_ONE, Level.ALL) is Level.ONE
    with pytest.raises(InvalidArgument, match="unknown consistency level 99"):
        resolve(99, Level.QUORUM)


def test_only_linearizable_is_refused_for_multi_key_operations() -> None:
    for level in (Level.ONE, Level.QUORUM, Level.ALL):
        single_key_only(level, "scans")
    with pytest.raises(InvalidArgument, match="single-key operations; scans at ONE, QUORUM or ALL"):
        single_key_only(Level.LINEARIZABLE, "scans")
