"""Certificate files read again when they change, and only as a consistent pair."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvnode.core.certs import CertificateAuthority
from kvnode.core.errors import StartupError
from kvnode.core.tlsfiles import TlsFiles


def swap(path: Path, data: bytes) -> None:
    """Replace a file whole, as Kubernetes' symlink swap and ``KeyPair.write`` do."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    tmp.replace(path)


def test_a_changed_pair_is_taken_once_and_a_half_written_one_is_not(tmp_path: Path) -> None:
    ca = CertificateAuthority.create()
    first = ca.node("kv-0")
    cert, key = first.write(tmp_path, "kv-0")
    files = TlsFiles(cert, key, None, what="--cert-file")
    assert (files.cert, files.generation) == (first.cert, 1)
    assert not files.refresh()  # unchanged: not read again

    second = ca.node("kv-0")
    swap(key, second.key)  # the key is new, the certificate still the old one
    assert not files.refresh()
    assert files.cert == first.cert
    swap(cert, second.cert)
    assert files.refresh()
    assert (files.cert, files.key, files.generation) == (second.cert, second.key, 2)

    cert.unlink()  # a Secret being swapped: keep serving the last good pair
    assert not files.refresh()
    assert files.cert == second.cert


def test_unreadable_or_mismatched_files_stop_start_up_naming_the_flag(tmp_path: Path) -> None:
    ca = CertificateAuthority.create()
    cert, _ = ca.node("a").write(tmp_path, "a")
    _, other_key = ca.node("b").write(tmp_path, "b")
    with pytest.raises(StartupError, match="--peer-cert-file: the certificate and the key do not belong"):
        TlsFiles(cert, other_key, None, what="--peer-cert-file")
    with pytest.raises(StartupError, match="--cert-file: cannot read"):
        TlsFiles(tmp_path / "missing.crt", other_key, None, what="--cert-file")
