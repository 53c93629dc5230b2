"""The operator's RBAC is exactly the table in docs/operator.md ("RBAC"): no verb more, none less."""

from __future__ import annotations

import re

from tests.chart.helpers import NAMESPACE, REPO, VALUE_SETS, Body, render

Rule = tuple[str, str, str]  # api group, resource, verb


def documented_rules() -> tuple[set[Rule], set[Rule]]:
    """(namespaced rules, cluster-scoped rules) from docs/operator.md, leaving out the rows that
    apply only with kopf peering (the chart runs one standalone operator)."""
    text = (REPO / "docs" / "operator.md").read_text()
    section = text.split("## RBAC", 1)[1].split("\n## ", 1)[0]
    namespaced: set[Rule] = set()
    cluster: set[Rule] = set()
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 4 or not cells[0].startswith("`"):
            continue
        if "only with" in cells[3]:
            continue
        group = cells[0].strip("`").strip('"')
        resources = re.findall(r"`([^`]+)`", cells[1])
        verbs = [v.strip() for v in cells[2].split(",")]
        target = cluster if "ClusterRole" in cells[3] else namespaced
        for resource in resources:
            for verb in verbs:
                target.add((group, resource, verb))
    assert namespaced and cluster, "docs/operator.md has no RBAC table"
    return namespaced, cluster


def rules_of(role: Body) -> set[Rule]:
    out: set[Rule] = set()
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    out.add((group, resource, verb))
    return out


def test_cluster_wide_rbac_is_exactly_the_documented_rules() -> None:
    namespaced, cluster = documented_rules()
    rendered = render({})
    role = rendered.one("ClusterRole")
    assert rules_of(role) == namespaced | cluster
    binding = rendered.one("ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    account = rendered.one("ServiceAccount")["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]
    assert not rendered.of_kind("Role")


def test_namespaced_rbac_has_a_role_per_namespace_and_only_nodes_cluster_wide() -> None:
    namespaced, cluster = documented_rules()
    rendered = render(VALUE_SETS["namespaced"])
    assert rules_of(rendered.one("ClusterRole")) == cluster
    roles = {r["metadata"]["namespace"]: r for r in rendered.of_kind("Role")}
    assert set(roles) == {"kvstore-system", "shop"}
    for role in roles.values():
        assert rules_of(role) == namespaced
    bindings = {b["metadata"]["namespace"]: b for b in rendered.of_kind("RoleBinding")}
    assert set(bindings) == set(roles)
    for ns, binding in bindings.items():
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": roles[ns]["metadata"]["name"],
        }
        assert binding["subjects"][0]["namespace"] == NAMESPACE


def test_no_wildcards_and_no_secrets() -> None:
    for value_set in ("default", "namespaced"):
        for kind in ("ClusterRole", "Role"):
            for role in render(VALUE_SETS[value_set]).of_kind(kind):
                for group, resource, verb in rules_of(role):
                    assert "*" not in (group, resource, verb)
                    assert resource not in {"secrets", "persistentvolumeclaims"}


def test_rbac_can_be_left_to_the_cluster_admin() -> None:
    rendered = render({"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "ops"}})
    assert not {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ServiceAccount"} & set(
        rendered.kinds()
    )
    assert rendered.one("Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "ops"
