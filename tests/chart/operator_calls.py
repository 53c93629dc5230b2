"""The Kubernetes requests the operator's code can make, read from its source (no run needed), so
that the chart's RBAC can be checked against them: every rule used, none missing.

Three sources, each mapped to RBAC verbs as the API server names them:

* calls of the operator's API client (``kvoperator.kube``): ``get``, ``list_objects`` (list),
  ``create``, ``patch``/``patch_json`` (patch), ``delete``, with ``subresource="status"``, and
  ``children.ensure`` (get, then create or patch);
* kopf's handlers: kopf lists and watches each resource it has a handler for, and for the
  create/update/delete/resume handlers, daemons and timers it patches the object (its progress and
  diff-base annotations, its finalizer); ``kopf.event`` posts core/v1 Events;
* admission: ``blockOwnerDeletion: true`` in an owner reference needs ``update`` on the owner's
  ``finalizers`` subresource (the OwnerReferencesPermissionEnforcement admission plugin,
  plugin/pkg/admission/gc/gc_admission.go, "cannot set blockOwnerDeletion ...").
"""

from __future__ import annotations

import ast
from pathlib import Path

from kvoperator import constants, kube
from kvoperator.builders.common import owner_reference

OPERATOR = Path(__file__).resolve().parents[2] / "operator" / "kvoperator"
Rule = tuple[str, str, str]  # api group, resource (plural or plural/subresource), verb

CLIENT_VERBS = {
    "get": ("get",),
    "list_objects": ("list",),
    "create": ("create",),
    "patch": ("patch",),
    "patch_json": ("patch",),
    "delete": ("delete",),
    "ensure": ("get", "create", "patch"),  # kvoperator.children.ensure(p, resource, ...)
}
KOPF_WATCH = ("list", "watch")
KOPF_PATCHES = {"create", "update", "delete", "resume", "field", "daemon", "timer"}


def _resource_constants() -> dict[str, kube.Resource]:
    """Every module-level ``NAME = [kube.]Resource(...)`` of the operator, by name."""
    out: dict[str, kube.Resource] = {}
    for path in sorted(OPERATOR.rglob("*.py")):
        for stmt in ast.parse(path.read_text(), str(path)).body:
            if not (isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Call)):
                continue
            if _dotted(stmt.value.func) not in {"Resource", "kube.Resource"}:
                continue
            code = compile(ast.Expression(stmt.value), str(path), "eval")
            value = eval(code, {"Resource": kube.Resource, "kube": kube, "c": constants})
            for target in stmt.targets:
                if isinstance(target, ast.Name):
                    out[target.id] = value
    return out


def _resource(node: ast.expr, constants_: dict[str, kube.Resource]) -> kube.Resource | None:
    """``kube.PODS`` (or ``PODS``, or ``LEASES`` of another module) as the Resource it names."""
    name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None
    return constants_.get(name) if name else None


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def _module_tuples(tree: ast.Module) -> dict[str, tuple[str, ...]]:
    """Module-level ``NAME = (c.GROUP, c.VERSION, "plural")`` tuples, evaluated."""
    out: dict[str, tuple[str, ...]] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Tuple):
            for target in stmt.targets:
                if isinstance(target, ast.Name) and all(
                    _dotted(e).startswith("c.") or isinstance(e, ast.Constant) for e in stmt.value.elts
                ):
                    code = compile(ast.Expression(stmt.value), "<resource>", "eval")
                    value = eval(code, {"c": constants})  # only constants of kvoperator.constants
                    out[target.id] = tuple(str(v) for v in value)
    return out


def _handler_resource(call: ast.Call, tuples: dict[str, tuple[str, ...]]) -> tuple[str, str] | None:
    args: list[str] = []
    for arg in call.args:
        if isinstance(arg, ast.Starred) and isinstance(arg.value, ast.Name):
            args += tuples[arg.value.id]
        elif isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            args.append(arg.value)
        else:
            return None
    return (args[0], args[2]) if len(args) == 3 else None


def _client_calls(tree: ast.Module, resources: dict[str, kube.Resource]) -> set[Rule]:
    out: set[Rule] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        method = node.func.attr if isinstance(node.func, ast.Attribute) else _dotted(node.func)
        if method not in CLIENT_VERBS:
            continue
        position = 1 if method == "ensure" else 0
        if len(node.args) <= position or (resource := _resource(node.args[position], resources)) is None:
            continue
        plural = resource.plural
        for keyword in node.keywords:
            sub = keyword.value.value if isinstance(keyword.value, ast.Constant) else None
            if keyword.arg == "subresource" and isinstance(sub, str) and sub:
                plural = f"{plural}/{sub}"
        out |= {(resource.group, plural, verb) for verb in CLIENT_VERBS[method]}
    return out


def _kopf_calls(tree: ast.Module) -> set[Rule]:
    out: set[Rule] = set()
    tuples = _module_tuples(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _dotted(node.func) == "kopf.event":
            out.add(("", "events", "create"))
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for decorator in node.decorator_list:
            if not isinstance(decorator, ast.Call):
                continue
            name = _dotted(decorator.func)
            if not (name.startswith("kopf.on.") or name in {"kopf.daemon", "kopf.timer"}):
                continue
            target = _handler_resource(decorator, tuples)
            if target is None:
                continue  # startup, cleanup, probe: no resource
            group, plural = target
            verbs = KOPF_WATCH + (("patch",) if name.rsplit(".", 1)[1] in KOPF_PATCHES else ())
            out |= {(group, plural, verb) for verb in verbs}
    return out


def _admission() -> set[Rule]:
    """``update`` on the finalizers of every owner the operator names with blockOwnerDeletion."""
    owner = {"apiVersion": constants.API_VERSION, "kind": constants.KVSTORE_KIND,
             "metadata": {"name": "s", "namespace": "n", "uid": "u"}}  # fmt: skip
    ref = owner_reference(owner)
    if not ref.get("blockOwnerDeletion"):
        return set()
    assert ref["kind"] == constants.KVSTORE_KIND, "an owner kind this scan does not map"
    return {(constants.GROUP, f"{constants.KVSTORE_PLURAL}/finalizers", "update")}


def used_rules() -> set[Rule]:
    """Every (group, resource, verb) the operator's code can request."""
    out = _admission()
    resources = _resource_constants()
    for path in sorted(OPERATOR.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        out |= _client_calls(tree, resources) | _kopf_calls(tree)
    return out
