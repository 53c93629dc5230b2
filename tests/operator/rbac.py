"""RBAC and validation as a real API server applies them, for the test API server (apiserver.py).

Each function follows the Kubernetes source it names, reduced to what the operator's requests use.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

Body = dict[str, Any]

CHART_HELPERS = Path(__file__).resolve().parents[2] / "charts" / "kvstore" / "templates" / "_helpers.tpl"


def verb_of(method: str, name: str | None, params: Mapping[str, str]) -> str:
    """The RBAC verb of an HTTP request (k8s.io/apiserver/pkg/endpoints/request/requestinfo.go:
    GET is get or list, or watch with ?watch; POST create; PUT update; PATCH patch; DELETE delete,
    or deletecollection without a name)."""
    method = method.upper()
    if method == "GET":
        if params.get("watch") in ("true", "1"):
            return "watch"
        return "get" if name else "list"
    if method == "DELETE":
        return "delete" if name else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())


def subject_matches(subject: Mapping[str, Any], user: str, binding_namespace: str | None) -> bool:
    """plugin/pkg/auth/authorizer/rbac/subject_locator.go (appliesToUser): a ServiceAccount subject
    is the user ``system:serviceaccount:<namespace>:<name>``."""
    kind = subject.get("kind")
    if kind == "ServiceAccount":
        namespace = subject.get("namespace") or binding_namespace
        return user == f"system:serviceaccount:{namespace}:{subject.get('name')}"
    if kind == "User":
        return user == subject.get("name")
    return False


def rule_allows(rule: Mapping[str, Any], verb: str, group: str, resource: str, name: str | None) -> bool:
    """pkg/apis/rbac/v1/evaluation_helpers.go (VerbMatches, APIGroupMatches, ResourceMatches,
    ResourceNameMatches); ``resource`` is ``plural`` or ``plural/subresource``."""

    def has(values: Iterable[str] | None, wanted: str) -> bool:
        values = list(values or [])
        return "*" in values or wanted in values

    if not (has(rule.get("verbs"), verb) and has(rule.get("apiGroups"), group)):
        return False
    if not has(rule.get("resources"), resource):
        plural = resource.split("/", 1)[0]
        if "/" not in resource or f"{plural}/*" not in (rule.get("resources") or []):
            return False
    names = rule.get("resourceNames") or []
    return not names or (name is not None and name in names)


def allowed(
    objects: Mapping[tuple[str, str | None, str], Body],
    user: str,
    verb: str,
    group: str,
    resource: str,
    namespace: str | None,
    name: str | None,
) -> bool:
    """plugin/pkg/auth/authorizer/rbac/rbac.go (Authorize, through VisitRulesFor): the rules of the
    ClusterRoleBindings, and of the RoleBindings in the request's namespace, that name the user.
    ``objects`` maps (kind, namespace, name) to the stored RBAC objects."""
    rules: list[Mapping[str, Any]] = []
    bindings: list[tuple[Body, str | None]] = [
        (b, None) for (k, _, _), b in objects.items() if k == "ClusterRoleBinding"
    ]
    if namespace:
        bindings += [
            (b, namespace) for (k, ns, _), b in objects.items() if k == "RoleBinding" and ns == namespace
        ]
    for binding, ns in bindings:
        if not any(subject_matches(s, user, ns) for s in binding.get("subjects") or []):
            continue
        ref = binding.get("roleRef") or {}
        role = objects.get(("Role", ns, ref.get("name", ""))) if ref.get("kind") == "Role" and ns else None
        if ref.get("kind") == "ClusterRole":
            role = objects.get(("ClusterRole", None, ref.get("name", "")))
        if role is not None:
            rules += role.get("rules") or []
    return any(rule_allows(rule, verb, group, resource, name) for rule in rules)


# apimachinery/pkg/util/validation/validation.go: IsValidLabelValue and IsDNS1035Label.
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def label_errors(meta: Mapping[str, Any]) -> list[str]:
    """apimachinery/pkg/apis/meta/v1/validation (ValidateLabels): a value has at most 63
    characters of the label alphabet."""
    errors = []
    for key, value in (meta.get("labels") or {}).items():
        text = str(value)
        if len(text) > 63 or not LABEL_VALUE.fullmatch(text):
            errors.append(
                f"metadata.labels: Invalid value: {text!r}: label {key} must have at most 63 "
                "characters of [A-Za-z0-9_.-], beginning and ending with [A-Za-z0-9]"
            )
    return errors


def service_name_errors(name: str) -> list[str]:
    """pkg/apis/core/validation/validation.go (ValidateServiceName = NameIsDNS1035Label)."""
    if len(name) > 63 or not DNS1035_LABEL.fullmatch(name):
        return [
            f"metadata.name: Invalid value: {name!r}: a DNS-1035 label must consist of lower case "
            "alphanumeric characters or '-', start with a letter, and have at most 63 characters"
        ]
    return []


def chart_rules(template: str) -> list[Body]:
    """The RBAC rules of a named template in the chart's _helpers.tpl (``kvstore.namespacedRules``,
    ``kvstore.clusterRules``): the tests grant the operator exactly what the chart grants."""
    text = CHART_HELPERS.read_text()
    match = re.search(
        r'\{\{-? define "' + re.escape(template) + r'" -?\}\}\n(.*?)\{\{-? end -?\}\}', text, re.DOTALL
    )
    assert match, f"{template} not found in {CHART_HELPERS}"
    rules = yaml.safe_load(match.group(1))
    assert isinstance(rules, list)
    return rules
