"""Validate a custom resource against its CRD the way the API server does, as far as a test can.

1. Defaults from the schema are applied first (the server defaults before it validates, so CEL
   rules see defaulted values).
2. The structural schema, with jsonschema. Unknown fields are refused, as by the server's strict
   field validation (kubectl's default), except under ``x-kubernetes-preserve-unknown-fields``.
3. The CEL rules (``x-kubernetes-validations``), with cel-python. Transition rules (those that use
   ``oldSelf``) run only for an update, where the old object is given, and only where the old
   object has the field too, as on the server.
"""

from __future__ import annotations

import copy
from typing import Any

import celpy
import jsonschema
from celpy.adapter import json_to_cel
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


def _cel_errors(schema: Body, value: Any, old: Any, path: str, env: celpy.Environment) -> list[str]:
    errors: list[str] = []
    for rule in schema.get("x-kubernetes-validations") or []:
        expr = rule["rule"]
        transition = "oldSelf" in expr
        if transition and old is None:
            continue
        activation = {"self": json_to_cel(value)}
        if transition:
            activation["oldSelf"] = json_to_cel(old)
        result: object = env.program(env.compile(expr)).evaluate(activation)
        if isinstance(result, CELEvalError):
            errors.append(f"{path or '<root>'}: rule {expr!r} failed to evaluate: {result}")
        elif not bool(result):
            errors.append(f"{path or '<root>'}: {rule.get('message', expr)}")
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in value:
                old_sub = old.get(key) if isinstance(old, dict) else None
                errors += _cel_errors(sub, value[key], old_sub, f"{path}.{key}", env)
    return errors


def validate(crd: Body, obj: Body, old: Body | None = None) -> list[str]:
    """Every reason the API server would refuse ``obj`` (a create, or an update of ``old``)."""
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
    return _cel_errors(schema, obj, old, "", celpy.Environment())
