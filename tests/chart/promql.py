"""Which metrics and labels a PromQL expression uses, read with a real PromQL parser (promql-parser,
the Rust parser's Python binding), so an expression that Prometheus would refuse fails here too.

Grafana's template variables are replaced first: the interval ones (``$__rate_interval``,
``$__interval``, ``$__range``) by ``5m``, any other (``$namespace``) by ``.*``. Variables only
belong inside ranges and label-matcher strings; one anywhere else makes the parse fail.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import promql_parser


class PromQLError(ValueError):
    pass


@dataclass
class Selector:
    metric: str
    labels: dict[str, str] = field(default_factory=dict)  # label -> matcher value


@dataclass
class Parsed:
    selectors: list[Selector]
    grouping_labels: set[str]

    @property
    def metrics(self) -> set[str]:
        return {s.metric for s in self.selectors}


def substitute_grafana_variables(expr: str) -> str:
    expr = re.sub(r"\$\{?__(rate_interval|interval|range)\}?", "5m", expr)
    return re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", ".*", expr)


def parse(expr: str) -> Parsed:
    try:
        ast = promql_parser.parse(substitute_grafana_variables(expr))
    except (ValueError, RuntimeError) as exc:
        raise PromQLError(f"not valid PromQL: {expr!r}: {exc}") from None
    selectors: list[Selector] = []
    grouping: set[str] = set()

    def visit(node: object) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            if not node.name:
                raise PromQLError(f"a selector without a metric name in {expr!r}")
            matchers = {m.name: m.value for m in node.matchers.matchers if m.name != "__name__"}
            selectors.append(Selector(node.name, matchers))
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            grouping.update(node.modifier.labels)
        elif isinstance(node, promql_parser.BinaryExpr) and node.modifier is not None:
            if node.modifier.matching is not None:
                grouping.update(node.modifier.matching.labels)
            grouping.update(node.modifier.group_labels or [])
        return True

    promql_parser.walk(ast, visit)
    return Parsed(selectors, grouping)
