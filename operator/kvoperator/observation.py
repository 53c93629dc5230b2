"""One observation of a store: its objects in the cluster and what its nodes report.

Every reconcile pass starts from a fresh observation, so the operator's decisions depend only on
the cluster, the nodes and the CR's status (where what a decision must remember is kept:
memory.py), never on memory in the operator process that a restart would lose. What several steps
need (the StatefulSet's target size, the restore source) is computed here once per pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kvnode.client.credentials import Credentials
from kvnode.core.membership import Membership
from kvoperator import kube, names, plan
from kvoperator.builders.tls import secret_data
from kvoperator.config import OperatorConfig
from kvoperator.node_admin import NodeAdminApi, NodeHealth
from kvoperator.pods import PodView
from kvoperator.restore_source import RestoreSource, resolve
from kvoperator.spec import SpecError, StoreSpec, parse_store_spec


@dataclass
class Observed:
    """A store as one pass found it: its CR, StatefulSet and pods, what its nodes answered, and
    the backup ``spec.restoreFrom`` names."""

    store: dict[str, Any]
    spec: StoreSpec | None
    spec_error: str = ""
    statefulset: dict[str, Any] | None = None
    pods: dict[int, PodView] = field(default_factory=dict)
    probes: dict[str, NodeHealth] = field(default_factory=dict)
    membership: Membership | None = None
    restore_source: RestoreSource | None = None
    restore_missing: str = ""  # why restore_source is None although spec.restoreFrom is set
    # How this pass talks to the store's nodes: with the operator's certificate when TLS is on.
    admin: NodeAdminApi | None = None

    @property
    def nodes(self) -> NodeAdminApi:
        assert self.admin is not None, "observe() sets it"
        return self.admin

    @property
    def name(self) -> str:
        return str(self.store["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.store["metadata"]["namespace"])

    @property
    def uid(self) -> str:
        return str(self.store["metadata"]["uid"])

    @property
    def status(self) -> Mapping[str, Any]:
        return self.store.get("status") or {}

    @property
    def statefulset_replicas(self) -> int | None:
        if self.statefulset is None:
            return None
        return int((self.statefulset.get("spec") or {}).get("replicas", 0))

    @property
    def target_replicas(self) -> int:
        """How many pods the StatefulSet should have now (plan.statefulset_replicas)."""
        assert self.spec is not None
        return plan.statefulset_replicas(
            self.name,
            self.spec.replicas,
            self.spec.replication_factor,
            self.membership,
            self.statefulset_replicas,
        )

    @property
    def recorded_members(self) -> list[Mapping[str, Any]]:
        """``status.members`` as the last pass wrote it: the membership the nodes last reported."""
        return [m for m in self.status.get("members") or [] if isinstance(m, Mapping) and m.get("name")]

    @property
    def recorded_epoch(self) -> int:
        """``status.membershipEpoch`` as the last pass wrote it."""
        return int(self.status.get("membershipEpoch") or 0)

    @property
    def unreachable(self) -> bool:
        """The store had a membership (its status recorded one) but no node answers now. Its
        last known membership still stands: the store is down, not being created."""
        had = self.recorded_epoch > 0 or bool(self.recorded_members)
        return self.spec is not None and self.membership is None and had

    def member_ids(self) -> set[str]:
        """The members the nodes report or, when none answers, the ones the status last recorded."""
        if self.membership is not None:
            return {m.id for m in self.membership.members}
        return {str(m["name"]) for m in self.recorded_members}

    def address_of(self, ordinal: int, config: OperatorConfig) -> str | None:
        pod = self.pods.get(ordinal)
        assert self.spec is not None
        return names.member_address(
            self.name, ordinal, self.namespace, self.spec.port, pod.ip if pod else None, config
        )

    def peer_addresses(self, serving: dict[int, str]) -> dict[int, str]:
        """Ordinal -> peer address of each serving pod that has a peer port."""
        return {
            ordinal: names.with_port(address, port)
            for ordinal, address in serving.items()
            if (port := self.pods[ordinal].peer_port) is not None
        }

    def serving_addresses(self, config: OperatorConfig) -> dict[int, str]:
        """Ordinal -> address of every pod that is Ready and whose node answers health checks."""
        result: dict[int, str] = {}
        for ordinal, pod in self.pods.items():
            probe = self.probes.get(pod.name)
            address = self.address_of(ordinal, config)
            if pod.ready and probe is not None and probe.healthy and not probe.rebuilding and address:
                result[ordinal] = address
        return result


async def _credentials(
    client: kube.KubeApi, namespace: str, store: str, spec: StoreSpec
) -> Credentials | None:
    """The operator's ``kvstore:admin`` identity for the store's nodes (None: plaintext, when TLS is
    off, or before the TLS step has issued it). The node certificate names the client Service, so
    that name is checked whichever address (pod DNS name or pod IP) is dialled."""
    if not spec.tls.enabled:
        return None
    secret = await client.get(kube.SECRETS, namespace, names.operator_tls_secret(store))
    if secret is None:
        return None
    ca, cert, key = (secret_data(secret, k) for k in ("ca.crt", "tls.crt", "tls.key"))
    if not (ca and cert and key):
        return None
    server_name = f"{names.client_service(store)}.{namespace}.svc"
    return Credentials(ca=ca, cert=cert, key=key, server_name=server_name)


async def observe(
    client: kube.KubeApi, admin: NodeAdminApi, config: OperatorConfig, namespace: str, name: str
) -> Observed | None:
    """Read the store, its StatefulSet and pods, probe the pods' nodes, ask them for the
    membership, and find the backup to restore. None when the store is gone."""
    store = await client.get(kube.KVSTORES, namespace, name)
    if store is None:
        return None
    try:
        spec: StoreSpec | None = parse_store_spec(store.get("spec"))
        error = ""
    except SpecError as exc:
        spec, error = None, str(exc)
    problem = names.name_problem(name)
    if problem is not None:  # no step builds anything, and the status says why
        spec, error = None, problem
    observed = Observed(store=store, spec=spec, spec_error=error)
    observed.statefulset = await client.get(kube.STATEFULSETS, namespace, names.statefulset(name))
    for body in await client.list_objects(kube.PODS, namespace, names.selector_labels(name)):
        pod_name = str(body.get("metadata", {}).get("name", ""))
        ordinal = names.ordinal_of(name, pod_name)
        if ordinal is not None:
            observed.pods[ordinal] = PodView(pod_name, ordinal, body)
    if spec is None:
        return observed
    if spec.restore_from is not None:
        kvbackup = None
        if spec.restore_from.backup_name:
            kvbackup = await client.get(kube.KVBACKUPS, namespace, spec.restore_from.backup_name)
        observed.restore_source, observed.restore_missing = resolve(spec.restore_from, kvbackup)
    admin = observed.admin = admin.for_store(await _credentials(client, namespace, name, spec))
    addresses = {
        pod.name: address
        for ordinal, pod in observed.pods.items()
        if not pod.terminating and (address := observed.address_of(ordinal, config)) and pod.ip
    }
    observed.probes = await admin.probe_all(addresses)
    answering = [addresses[n] for n, probe in observed.probes.items() if probe.status is not None]
    observed.membership = await admin.membership(answering)
    return observed
