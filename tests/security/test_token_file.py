"""The bearer-token file: kube-apiserver's static token format, read again when it changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvnode.server import tokens
from kvnode.server.tokens import TokenFile, TokenUser


def test_lines_in_the_static_token_format_are_read_and_bad_ones_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tokens.csv"
    path.write_text(
        "# comment\n"
        "\n"
        'abc,alice,1,"kvstore:read,kvstore:write"\n'
        "def,bob,2\n"
        "only-a-token\n"
        "ghi,carol,3,kvstore:admin\n"
    )
    found = TokenFile(path)
    assert found.user("abc") == TokenUser("alice", "1", ("kvstore:read", "kvstore:write"))
    assert found.user("def") == TokenUser("bob", "2", ())
    assert found.user("ghi") == TokenUser("carol", "3", ("kvstore:admin",))
    assert found.user("only-a-token") is None
    assert "line 5" in caplog.text and "only-a-token" not in caplog.text


def test_a_changed_file_is_read_again_and_an_unreadable_one_keeps_the_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tokens, "RECHECK", 0.0)
    path = tmp_path / "tokens.csv"
    path.write_text("old,alice,1\n")
    found = TokenFile(path)
    assert found.user("old") is not None
    path.write_text("new,alice,1,kvstore:read\n")
    assert found.user("old") is None and found.user("new") is not None
    path.unlink()
    assert found.user("new") is not None
