"""Validate a custom resource against its CRD the way the API server does, as far as a test can.

1. Defaults from the schema are applied first (the server defaults before it validates, so CEL
   rules see defaulted values).
2. The structural schema, with jsonschema. Unknown fields are refused, as by the server's strict
   field validation (kubectl's default), except under ``x-kubernetes-preserve-unknown-fields``.
3. The CEL rules (``x-kubernetes-validations``), with cel-python, a real CEL implementation. As on
   the server: ``self`` is the value at the rule's place; a rule on the root sees only ``name`` and
   ``generateName`` of ``metadata``; transition rules (those that use ``oldSelf``) run only for an
   update, and only where the old object has the value too (map entries correlate by key, atomic
   list items never), unless the rule sets ``optionalOldSelf``, which runs it always with
   ``oldSelf`` a CEL optional (``hasValue()``, ``value()``, ``orValue()``); a rule that fails to
   evaluate refuses the object; ``messageExpression`` replaces ``message``.

Not emulated: validation ratcheting (1.30+: an update may keep an unchanged value that no longer
validates) and CEL cost limits; the tests do not rely on either.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

import celpy
import jsonschema
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError

Body = dict[str, Any]


def version_schema(crd: Body, version: str = "v1alpha1") -> Body:
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            schema: Body = v["schema"]["openAPIV3Schema"]
            return schema
    raise KeyError(f"no version {version} in {crd['metadata']['name']}")


def strict_json_schema(schema: Body) -> Body:
    """The OpenAPI schema as a JSON schema that refuses unknown fields (not under ``metadata``)."""
    out = copy.deepcopy(schema)

    def walk(node: Body, path: str) -> None:
        if node.get("x-kubernetes-preserve-unknown-fields"):
            return
        if "properties" in node and "additionalProperties" not in node and path != ".metadata":
            node["additionalProperties"] = False
        for key, sub in (node.get("properties") or {}).items():
            walk(sub, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], f"{path}{{}}")

    walk(out, "")
    return out


def apply_defaults(schema: Body, value: Any) -> Any:
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = apply_defaults(sub, value[key])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(schema["items"], v) for v in value]
    return value


TRANSITION = re.compile(r"\boldSelf\b")


@dataclass(frozen=True)
class RuleRun:
    """One evaluation of one rule: which rule (its schema path and expression) and whether it held."""

    path: str
    rule: str
    held: bool


class _Optional:
    """A CEL optional, as ``oldSelf`` is under ``optionalOldSelf: true`` (cel-python has no optional
    type: its member functions are supplied below)."""

    def __init__(self, value: Any = None, present: bool = False) -> None:
        self.value, self.present = value, present


def _has_value(opt: _Optional) -> celpy.celtypes.BoolType:
    return celpy.celtypes.BoolType(opt.present)


def _value(opt: _Optional) -> Any:
    if not opt.present:
        raise ValueError("optional.none() dereference")
    return opt.value


def _or_value(opt: _Optional, default: Any) -> Any:
    return opt.value if opt.present else default


OPTIONAL_FUNCTIONS: dict[str, Any] = {"hasValue": _has_value, "value": _value, "orValue": _or_value}


def _root_view(obj: Body) -> Body:
    """What a rule on the root sees: of ``metadata``, only ``name`` and ``generateName`` (Kubernetes,
    "Validation rules": "metadata.name and metadata.generateName are accessible")."""
    meta = obj.get("metadata") or {}
    return {**obj, "metadata": {k: meta[k] for k in ("name", "generateName") if k in meta}}


def _schema_path(path: str) -> str:
    """The path of the schema node: list indexes and map keys as ``[]``."""
    return re.sub(r"\[[^\]]*\]", "[]", path)


def _evaluate(env: celpy.Environment, expr: str, activation: dict[str, Any]) -> object:
    try:
        result: object = env.program(env.compile(expr), functions=OPTIONAL_FUNCTIONS).evaluate(activation)
    except (CELEvalError, CELParseError) as exc:
        return exc
    return result


def _cel_errors(
    schema: Body,
    value: Any,
    old: Any,
    path: str,
    env: celpy.Environment,
    runs: list[RuleRun],
    *,
    has_old: bool,
) -> list[str]:
    """The CEL rules of ``schema`` at ``value``, then of its children. ``has_old``: the old object
    (an update) has a value here, which is then ``old``."""
    errors: list[str] = []
    for rule in schema.get("x-kubernetes-validations") or []:
        expr = rule["rule"]
        activation: dict[str, Any] = {"self": json_to_cel(value)}
        if TRANSITION.search(expr):
            if rule.get("optionalOldSelf"):
                # Evaluated on create too, with oldSelf an optional (none without an old value).
                activation["oldSelf"] = _Optional(json_to_cel(old), True) if has_old else _Optional()
            elif not has_old:
                continue  # a transition rule runs only where the old object has the value too
            else:
                activation["oldSelf"] = json_to_cel(old)
        result = _evaluate(env, expr, activation)
        where = path or "<root>"
        if isinstance(result, Exception):
            errors.append(f"{where}: rule {expr!r} failed to evaluate: {result}")
            runs.append(RuleRun(_schema_path(path), expr, False))
            continue
        held = bool(result)
        runs.append(RuleRun(_schema_path(path), expr, held))
        if not held:
            message = rule.get("message", expr)
            if "messageExpression" in rule:
                evaluated = _evaluate(env, rule["messageExpression"], activation)
                if not isinstance(evaluated, Exception):
                    message = str(evaluated)
            errors.append(f"{where}: {message}")
    if isinstance(value, dict):
        olds = old if has_old and isinstance(old, dict) else {}
        for key, sub in (schema.get("properties") or {}).items():
            if key in value:
                errors += _cel_errors(
                    sub, value[key], olds.get(key), f"{path}.{key}", env, runs, has_old=key in olds
                )
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):  # a map: entries correlate with the old map's by key
            for key in set(value) - set(schema.get("properties") or {}):
                errors += _cel_errors(
                    extra, value[key], olds.get(key), f"{path}[{key}]", env, runs, has_old=key in olds
                )
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        # Items of an atomic list (no x-kubernetes-list-type map) do not correlate with old ones,
        # so their transition rules never run; this CRD has no map lists.
        assert schema.get("x-kubernetes-list-type") != "map", "map lists are not emulated"
        for i, item in enumerate(value):
            errors += _cel_errors(schema["items"], item, None, f"{path}[{i}]", env, runs, has_old=False)
    return errors


def validate(
    crd: Body, obj: Body, old: Body | None = None, *, runs: list[RuleRun] | None = None
) -> list[str]:
    """Every reason the API server would refuse ``obj`` (a create, or an update of ``old``).
    ``runs``, when given, collects each rule evaluation (to show that every rule was exercised)."""
    schema = version_schema(crd)
    obj = apply_defaults(schema, copy.deepcopy(obj))
    if old is not None:
        old = apply_defaults(schema, copy.deepcopy(old))
    validator = jsonschema.Draft7Validator(strict_json_schema(schema))
    errors = [
        f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
        for e in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    ]
    if errors:
        return errors  # CEL runs only on objects that pass the structural schema
    old_root = _root_view(old) if old is not None else None
    return _cel_errors(
        schema, _root_view(obj), old_root, "", celpy.Environment(), runs if runs is not None else [],
        has_old=old is not None,
    )  # fmt: skip


def rules(crd: Body) -> list[tuple[str, str]]:
    """Every (schema path, rule) of the CRD, with the same paths as ``RuleRun``."""
    out: list[tuple[str, str]] = []

    def walk(node: Body, path: str) -> None:
        out.extend((path, r["rule"]) for r in node.get("x-kubernetes-validations") or [])
        for key, sub in (node.get("properties") or {}).items():
            walk(sub, f"{path}.{key}")
        for nested in ("items", "additionalProperties"):
            if isinstance(node.get(nested), dict):
                walk(node[nested], f"{path}[]")

    walk(version_schema(crd), "")
    return out
