"""The operator's RBAC is exactly the table in docs/kubernetes.md ("RBAC") and exactly what the
operator's code requests (tests/chart/operator_calls.py): no verb more, none less."""

from __future__ import annotations

import re

from pytest import MonkeyPatch

from tests.chart.helpers import NAMESPACE, REPO, VALUE_SETS, Body, Rendered, render
from tests.chart.operator_calls import used_rules

Rule = tuple[str, str, str]  # api group, resource, verb


def documented_rules() -> tuple[set[Rule], set[Rule], set[Rule]]:
    """(namespaced rules, cluster-scoped rules, leader-election rules in the release namespace)
    from docs/kubernetes.md's RBAC table."""
    text = (REPO / "docs" / "kubernetes.md").read_text()
    section = text.split("\n## RBAC", 1)[1].split("\n## ", 1)[0]
    namespaced: set[Rule] = set()
    cluster: set[Rule] = set()
    leader: set[Rule] = set()
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 4 or not cells[0].startswith("`"):
            continue
        group = cells[0].strip("`").strip('"')
        resources = re.findall(r"`([^`]+)`", cells[1])
        verbs = [v.strip() for v in cells[2].split(",")]
        target = (
            cluster
            if "ClusterRole" in cells[3]
            else leader
            if "release namespace" in cells[3]
            else namespaced
        )
        for resource in resources:
            for verb in verbs:
                target.add((group, resource, verb))
    assert namespaced and cluster and leader, "docs/kubernetes.md has no RBAC table"
    return namespaced, cluster, leader


def rules_of(role: Body) -> set[Rule]:
    out: set[Rule] = set()
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    out.add((group, resource, verb))
    return out


def leader_role(rendered: Rendered) -> Body:
    return rendered.one("Role", "kv-kvstore-operator-leader")


def store_roles(rendered: Rendered) -> list[Body]:
    return [r for r in rendered.of_kind("Role") if r is not leader_role(rendered)]


CLUSTER_WIDE: Body = {"operator": {"clusterWide": True}}


def operator_env(rendered: Rendered) -> dict[str, str | None]:
    container = rendered.one("Deployment")["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in container["env"]}


def test_by_default_the_operator_serves_its_own_namespace_with_a_role() -> None:
    """Least privilege: no ClusterRole beyond reading Nodes unless the values ask for it."""
    namespaced, cluster, _ = documented_rules()
    rendered = render({})
    assert rules_of(rendered.one("ClusterRole")) == cluster
    roles = {r["metadata"]["namespace"]: r for r in store_roles(rendered)}
    assert set(roles) == {NAMESPACE} and rules_of(roles[NAMESPACE]) == namespaced
    assert operator_env(rendered)["KVSTORE_OPERATOR_NAMESPACES"] == NAMESPACE
    assert ("", "secrets", "get") in namespaced
    assert ("networking.k8s.io", "networkpolicies", "create") in namespaced


def test_cluster_wide_rbac_is_exactly_the_documented_rules() -> None:
    namespaced, cluster, _ = documented_rules()
    rendered = render(CLUSTER_WIDE)
    assert operator_env(rendered)["KVSTORE_OPERATOR_NAMESPACES"] == ""
    role = rendered.one("ClusterRole")
    assert rules_of(role) == namespaced | cluster
    binding = rendered.one("ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    account = rendered.one("ServiceAccount")["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]
    assert not store_roles(rendered)


def test_namespaced_rbac_has_a_role_per_namespace_and_only_nodes_cluster_wide() -> None:
    namespaced, cluster, _ = documented_rules()
    rendered = render(VALUE_SETS["namespaced"])
    assert rules_of(rendered.one("ClusterRole")) == cluster
    roles = {r["metadata"]["namespace"]: r for r in store_roles(rendered)}
    assert set(roles) == {"kvstore-system", "shop"}
    for role in roles.values():
        assert rules_of(role) == namespaced
    bindings = {
        b["metadata"]["namespace"]: b
        for b in rendered.of_kind("RoleBinding")
        if b["roleRef"]["name"] != leader_role(rendered)["metadata"]["name"]
    }
    assert set(bindings) == set(roles)
    for ns, binding in bindings.items():
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": roles[ns]["metadata"]["name"],
        }
        assert binding["subjects"][0]["namespace"] == NAMESPACE


def test_no_wildcards_no_claims_and_secrets_only_by_name() -> None:
    """Secrets are read by name (the store's certificates), never listed or watched: a list would
    hand the operator every Secret of the namespace."""
    for values in (VALUE_SETS["default"], VALUE_SETS["namespaced"], CLUSTER_WIDE):
        for kind in ("ClusterRole", "Role"):
            for role in render(values).of_kind(kind):
                for group, resource, verb in rules_of(role):
                    assert "*" not in (group, resource, verb)
                    assert resource != "persistentvolumeclaims"
                    assert resource != "secrets" or verb in {"get", "create", "patch"}


def test_rbac_can_be_left_to_the_cluster_admin() -> None:
    rendered = render({"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "ops"}})
    assert not {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ServiceAccount"} & set(
        rendered.kinds()
    )
    assert rendered.one("Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "ops"


def test_the_chart_grants_exactly_what_the_operators_code_requests() -> None:
    """A rule the code never uses is a privilege too many; one it uses and lacks is a 403 on a real
    cluster (the API mock of tests/operator grants the chart's rules too)."""
    rendered = render(CLUSTER_WIDE)
    granted = rules_of(rendered.one("ClusterRole")) | rules_of(leader_role(rendered))
    used = used_rules()
    assert granted - used == set(), f"granted but never requested: {sorted(granted - used)}"
    assert used - granted == set(), f"requested but not granted: {sorted(used - granted)}"


def test_the_scan_sees_every_kind_of_request() -> None:
    """The scan of the operator's code finds each source of requests (so the test above can fail)."""
    used = used_rules()
    assert ("", "pods", "delete") in used  # a client call
    assert ("", "services", "create") in used  # children.ensure
    assert ("kvstore.dev", "kvstores/status", "patch") in used  # a status subresource
    assert ("apps", "statefulsets", "watch") in used  # a kopf handler
    assert ("", "events", "create") in used  # kopf.event
    assert ("", "secrets", "patch") in used  # a renewed certificate
    assert ("cert-manager.io", "certificates", "create") in used  # children.ensure with an issuer


def test_block_owner_deletion_would_need_update_on_the_owners_finalizers(monkeypatch: MonkeyPatch) -> None:
    """With OwnerReferencesPermissionEnforcement (OpenShift and others), setting
    blockOwnerDeletion needs update on the owner's finalizers: the scan asks for it if it is set."""
    from tests.chart import operator_calls

    def blocking(owner: Body) -> Body:
        return {"kind": owner["kind"], "blockOwnerDeletion": True}

    monkeypatch.setattr(operator_calls, "owner_reference", blocking)
    assert ("kvstore.dev", "kvstores/finalizers", "update") in operator_calls.used_rules()


def test_leader_election_has_a_role_in_the_release_namespace_only() -> None:
    """The Lease lives in the operator's namespace, which watchNamespaces may leave out."""
    _, _, leader = documented_rules()
    for value_set in ("default", "namespaced"):
        rendered = render(VALUE_SETS[value_set])
        role = leader_role(rendered)
        assert role["metadata"]["namespace"] == NAMESPACE and rules_of(role) == leader
        binding = rendered.one("RoleBinding", role["metadata"]["name"])
        assert binding["metadata"]["namespace"] == NAMESPACE
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                      "name": role["metadata"]["name"]}  # fmt: skip
        env = {
            e["name"]: e.get("value")
            for e in rendered.one("Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        assert env["KVSTORE_OPERATOR_LEADER_ELECTION_NAMESPACE"] == NAMESPACE
        assert env["KVSTORE_OPERATOR_LEASE_NAME"] == "kv-kvstore-operator"  # one Lease per release


def test_standby_replicas_wait_for_the_leaders_lease() -> None:
    deployment = render({"operator": {"replicas": 2}}).one("Deployment")
    assert deployment["spec"]["replicas"] == 2
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    from kvoperator.config import OperatorConfig

    operator_env = {k: v for k, v in env.items() if k.startswith("KVSTORE_OPERATOR_") and v is not None}
    assert OperatorConfig.from_env(operator_env).leader_election  # the operator's own reading
