"""TLS, identities and roles on a node's client port: real node processes, certificates made by a
test CA (kvnode.testing.tls), real gRPC.

One node with mutual TLS serves most tests (they only read its answers and keep to their own
keys); another serves TLS with bearer tokens and no client certificates."""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from kvnode.api.v1 import replica_pb2, replica_pb2_grpc
from kvnode.client import (
    Admin,
    Credentials,
    KVClient,
    KVError,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from kvnode.core.certs import ADMIN_ROLE, DAY, PEER_ROLE, READ_ROLE, WRITE_ROLE
from kvnode.testing.processes import ProcessCluster, metric, wait_for
from kvnode.testing.tls import HOSTS, TestPKI

KV_CALLS: dict[str, Callable[[KVClient, str], object]] = {
    "Get": lambda kv, key: kv.get(key),
    "Scan": lambda kv, key: kv.scan_page(key, key + "~"),
    "BatchGet": lambda kv, key: kv.batch_get([key]),
    "Put": lambda kv, key: kv.put(key, "v"),
    "Delete": lambda kv, key: kv.delete(key),
    "BatchWrite": lambda kv, key: kv.batch_write({key: "w"}),
}
ADMIN_CALLS: dict[str, Callable[[Admin, str], object]] = {
    "Admin/Status": lambda admin, address: admin.status(address),
    "Admin/RunAntiEntropy": lambda admin, address: admin.run_anti_entropy(address),
    "Admin/PartitionDigests": lambda admin, address: admin.partition_digests(address),
}
ALLOWED = {
    READ_ROLE: {"Get", "Scan", "BatchGet"},
    WRITE_ROLE: {"Get", "Scan", "BatchGet", "Put", "Delete", "BatchWrite"},
    ADMIN_ROLE: {*KV_CALLS, *ADMIN_CALLS},
    PEER_ROLE: {"Replica/Digests"},
    "someone-else": set(),
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return TestPKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def mtls(pki: TestPKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    """One node with mutual TLS and metrics."""
    with ProcessCluster(
        tmp_path_factory.mktemp("mtls"), 1, replication_factor=1, partitions=16, pki=pki, metrics=True
    ) as cluster:
        cluster.start()
        yield cluster


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tokens") / "tokens.csv"
    path.write_text(
        "# token,name,uid,groups\n"
        'r3ad-t0ken,reader,1001,"kvstore:read"\n'
        'wr1te-t0ken,writer,1002,"kvstore:read,kvstore:write"\n'
        'p33r-t0ken,sneaky,1003,"kvstore:peer,kvstore:admin"\n'
    )
    return path


@pytest.fixture(scope="module")
def token_node(
    pki: TestPKI, tokens: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProcessCluster]:
    """One node serving TLS (no client certificates) that takes bearer tokens."""
    cert, key = pki.node_files("tok-0")
    args = ["--cert-file", str(cert), "--key-file", str(key), "--token-file", str(tokens)]
    with ProcessCluster(
        tmp_path_factory.mktemp("tok"), 1, ids=["tok-0"], replication_factor=1, partitions=16, extra_args=args
    ) as cluster:
        # The harness's own admin client needs a token here too.
        cluster.credentials = Credentials(ca=pki.ca.cert, token="p33r-t0ken")
        cluster.start()
        yield cluster


@contextlib.contextmanager
def client(cluster: ProcessCluster, credentials: Credentials | None, **options: Any) -> Iterator[KVClient]:
    with KVClient(
        cluster.endpoints, credentials=credentials, timeout=5, retries=0, route=False, **options
    ) as kv:
        yield kv


def refusal(call: Callable[[], object]) -> KVError | None:
    try:
        call()
    except KVError as exc:
        return exc
    return None


# -- TLS ---------------------------------------------------------------------------------------


def test_plaintext_to_a_tls_port_fails_saying_the_node_serves_tls(mtls: ProcessCluster) -> None:
    with client(mtls, None) as kv, pytest.raises(Unavailable, match="serves TLS"):
        kv.get("x")


def test_a_certificate_from_another_ca_is_refused(mtls: ProcessCluster, tmp_path: Path) -> None:
    stranger = TestPKI(tmp_path, "another CA").client("stranger", [ADMIN_ROLE])
    # It trusts the right CA for the node, but its own certificate is the other CA's.
    mixed = Credentials(ca=mtls.pki.ca.cert, cert=stranger.cert, key=stranger.key)  # type: ignore[union-attr]
    with (
        client(mtls, mixed) as kv,
        pytest.raises(Unavailable, match="does not accept this client's certificate"),
    ):
        kv.put("x", "y")
    # And a client trusting only the other CA does not trust the node.
    with client(mtls, stranger) as kv, pytest.raises(Unavailable, match="not signed by the CA"):
        kv.get("x")


def test_an_expired_certificate_is_refused_saying_it_expired(pki: TestPKI, mtls: ProcessCluster) -> None:
    with client(mtls, pki.expired("late", [ADMIN_ROLE])) as kv, pytest.raises(Unavailable, match="expired"):
        kv.get("x")


def test_no_client_certificate_is_refused_saying_one_is_required(pki: TestPKI, mtls: ProcessCluster) -> None:
    with (
        client(mtls, pki.trust_only) as kv,
        pytest.raises(Unavailable, match="requires a client certificate"),
    ):
        kv.get("x")


# -- roles -------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", list(ALLOWED))
def test_each_role_is_allowed_its_table_and_refused_the_rest(
    pki: TestPKI, mtls: ProcessCluster, role: str, keyspace: str
) -> None:
    credentials = pki.client(f"as-{role}", [role])
    node = mtls[0]
    outcomes: dict[str, KVError | None] = {}
    with client(mtls, credentials) as kv, Admin.connect(credentials=credentials, timeout=5) as admin:
        for name, kv_call in KV_CALLS.items():
            outcomes[name] = refusal(lambda: kv_call(kv, keyspace + "k"))  # noqa: B023 - called at once
        for name, admin_call in ADMIN_CALLS.items():
            outcomes[name] = refusal(lambda: admin_call(admin, node.address))  # noqa: B023 - called at once
    outcomes["Replica/Digests"] = replica_digests(node.address, credentials)
    allowed = {name for name, error in outcomes.items() if error is None}
    assert allowed == ALLOWED[role], {n: e and e.message for n, e in outcomes.items()}
    for name, error in outcomes.items():
        if error is not None:
            assert isinstance(error, PermissionDenied), (name, error)
            assert "needs the role kvstore:" in error.message and f"as-{role}" in error.message


def replica_digests(address: str, credentials: Credentials) -> KVError | None:
    """A Replica call, as a peer makes it; on a single-port node it needs O=kvstore:peer."""
    creds = grpc.ssl_channel_credentials(credentials.ca, credentials.key, credentials.cert)
    with grpc.secure_channel(address, creds) as channel:
        try:
            replica_pb2_grpc.ReplicaStub(channel).Digests(replica_pb2.DigestsRequest(), timeout=5)
        except grpc.RpcError as exc:
            return (
                PermissionDenied(exc.details() or "")
                if exc.code() == grpc.StatusCode.PERMISSION_DENIED
                else KVError(f"{exc.code()}: {exc.details()}")
            )
    return None


def test_refusals_are_counted_by_method_and_audited_with_the_identity(
    pki: TestPKI, mtls: ProcessCluster
) -> None:
    node = mtls[0]
    before = metric(node, "kvnode_auth_refusals_total", method="Put", code="PERMISSION_DENIED")
    with client(mtls, pki.client("audited-reader", [READ_ROLE])) as kv:
        for _ in range(3):
            with pytest.raises(PermissionDenied, match="needs the role kvstore:write"):
                kv.put("x", "y")
    after = metric(node, "kvnode_auth_refusals_total", method="Put", code="PERMISSION_DENIED")
    assert after - before == 3
    wait_for(
        lambda: "certificate 'audited-reader' may not call KV/Put" in node.log_tail(200), 10, "the audit line"
    )


def test_health_and_reflection_need_no_role(pki: TestPKI, mtls: ProcessCluster) -> None:
    nobody = pki.client("nobody", [])
    creds = grpc.ssl_channel_credentials(nobody.ca, nobody.key, nobody.cert)
    with grpc.secure_channel(mtls.endpoints[0], creds) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        answers = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names = {s.name for answer in answers for s in answer.list_services_response.service}
    assert "kvnode.api.v1.KV" in names


# -- tokens ------------------------------------------------------------------------------------


def test_tokens_identify_callers_and_a_removed_token_stops_working_without_a_restart(
    pki: TestPKI, token_node: ProcessCluster, tokens: Path, keyspace: str
) -> None:
    writer = Credentials(ca=pki.ca.cert, token="wr1te-t0ken")
    reader = Credentials(ca=pki.ca.cert, token="r3ad-t0ken")
    with client(token_node, writer) as kv:
        kv.put(keyspace + "a", "1")
    with client(token_node, reader) as kv:
        assert kv.get(keyspace + "a").value == b"1"  # type: ignore[union-attr]
        with pytest.raises(
            PermissionDenied, match="token 'reader' may not call KV/Put: it needs the role kvstore:write"
        ):
            kv.put(keyspace + "a", "2")
    pid = token_node[0].pid
    tokens.write_text(
        tokens.read_text().replace('wr1te-t0ken,writer,1002,"kvstore:read,kvstore:write"\n', "")
    )

    def refused() -> bool:
        with client(token_node, writer) as kv:
            return isinstance(refusal(lambda: kv.put(keyspace + "a", "3")), Unauthenticated)

    wait_for(refused, 15, "the removed token to be refused")
    assert token_node[0].pid == pid
    assert "wr1te-t0ken" not in token_node[0].log_tail(500)


def test_without_credentials_or_with_an_unknown_token_a_call_is_unauthenticated(
    pki: TestPKI, token_node: ProcessCluster
) -> None:
    with (
        client(token_node, pki.trust_only) as kv,
        pytest.raises(Unauthenticated, match="needs a bearer token"),
    ):
        kv.get("x")
    guess = Credentials(ca=pki.ca.cert, token="guess")
    with client(token_node, guess) as kv, pytest.raises(Unauthenticated, match="not known"):
        kv.get("x")


def test_a_token_never_makes_a_peer(pki: TestPKI, token_node: ProcessCluster) -> None:
    """The token's groups say kvstore:peer; only a certificate may carry that role."""
    channel_creds = grpc.composite_channel_credentials(
        grpc.ssl_channel_credentials(pki.ca.cert), grpc.access_token_call_credentials("p33r-t0ken")
    )
    with (
        grpc.secure_channel(token_node.endpoints[0], channel_creds) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        replica_pb2_grpc.ReplicaStub(channel).Digests(replica_pb2.DigestsRequest(), timeout=5)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "needs the role kvstore:peer" in (refused.value.details() or "")


def test_kvctl_takes_the_etcdctl_flags(
    pki: TestPKI, mtls: ProcessCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str], keyspace: str
) -> None:
    from kvnode.cli.kvctl import main

    writer = pki.ca.issue("kvctl-writer", [WRITE_ROLE])
    cert, key = writer.write(tmp_path, "writer")
    flags = [
        "--endpoints",
        mtls.endpoints[0],
        "--cacert",
        str(pki.ca_file),
        "--cert",
        str(cert),
        "--key",
        str(key),
    ]
    assert main([*flags, "put", keyspace + "k", "v"]) == 0
    assert main([*flags, "get", keyspace + "k"]) == 0
    assert "v" in capsys.readouterr().out
    assert main([*flags, "backup", "list", "--dir", str(tmp_path)]) == 3
    assert "needs the role kvstore:admin" in capsys.readouterr().err


def test_without_tls_flags_the_node_serves_plaintext_and_warns_once_and_reflection_can_be_off(
    cluster_factory: Callable[..., ProcessCluster],
) -> None:
    cluster = cluster_factory(
        size=1, replication_factor=1, partitions=16, extra_args=["--reflection", "false"]
    )
    with KVClient(cluster.endpoints) as kv:
        kv.put("plain", "text")
    assert cluster[0].log_tail(200).count("serving plaintext on") == 1
    with grpc.insecure_channel(cluster.endpoints[0]) as channel, pytest.raises(grpc.RpcError) as off:
        list(
            reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
            )
        )
    assert off.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_a_node_whose_certificate_expired_is_refused_by_clients_saying_so(
    pki: TestPKI, tmp_path: Path
) -> None:
    start = datetime.datetime.now(datetime.UTC) - 2 * DAY
    cert, key = pki.ca.issue(
        "kv-0", [PEER_ROLE], hosts=HOSTS, server=True, not_before=start, valid_for=DAY
    ).write(tmp_path / "stale", "kv-0")
    args = ["--cert-file", str(cert), "--key-file", str(key)]
    with ProcessCluster(tmp_path, 1, replication_factor=1, partitions=16, extra_args=args) as cluster:
        cluster.credentials = pki.trust_only
        cluster.start(wait=False)
        wait_for(lambda: "serving on" in cluster[0].log_tail(50), 30, "the node to serve")
        assert "the certificate expired at" in cluster[0].log_tail(50)
        with (
            client(cluster, pki.trust_only) as kv,
            pytest.raises(Unavailable, match="node's certificate has expired"),
        ):
            kv.get("x")
