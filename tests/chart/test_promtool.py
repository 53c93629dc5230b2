"""The chart's alerts, checked by Prometheus' own ``promtool``: the rendered PrometheusRule passes
``promtool check rules``, and ``promtool test rules`` makes every alert fire on synthetic series
(a node down, a stale backup, a growing hint backlog, ...) and resolve again, with the labels and
the rendered summary and description that Alertmanager would get.

promtool comes with Debian's ``prometheus`` package (.ci/run installs it); without it these tests
are skipped, saying so.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.chart.helpers import VALUE_SETS, Body, render

PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package prometheus; .ci/run installs it)"
)

STORE = {"namespace": "shop", "store": "orders"}
NODE = {**STORE, "pod": "orders-0"}


@dataclass
class Case:
    """Series that make one alert fire at ``fires_at`` and be resolved at ``resolved_at``."""

    series: dict[str, str]  # series selector -> promtool's expanding notation, one sample a minute
    fires_at: str
    resolved_at: str
    labels: dict[str, str]  # the alert's labels, the rule's own (severity) left out
    value: str = ""  # how {{ $value }} renders at fires_at (through its function, if any)
    quiet_at: str = "1m"  # before the fault: no alert


def selector(name: str, labels: dict[str, str]) -> str:
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


CASES: dict[str, Case] = {
    # 3 active members, 2 Ready pods from minute 5 to 14.
    "KVStoreNodeDown": Case(
        {
            selector("kvstore_operator_members", {**STORE, "state": "active"}): "3x40",
            selector("kvstore_operator_ready_replicas", STORE): "3x4 2x10 3x25",
        },
        fires_at="12m",
        resolved_at="20m",
        labels=STORE,
        value="1",
    ),
    "KVStoreQuorumAtRisk": Case(
        {selector("kvstore_operator_condition", {**STORE, "type": "Available"}): "1x4 0x10 1x25"},
        fires_at="12m",
        resolved_at="20m",
        labels={**STORE, "type": "Available"},
    ),
    # 1000 more hints a minute until minute 40, then flat.
    "KVStoreHintBacklogGrowing": Case(
        {selector("kvnode_hints_pending", {**NODE, "peer": "orders-1"}): "0+1000x40 40000x30"},
        fires_at="30m",
        resolved_at="65m",
        labels={**NODE, "peer": "orders-1"},
        value="30000",
    ),
    "KVStoreHintsDropped": Case(
        {
            selector("kvnode_hints_dropped_total", {**NODE, "peer": "orders-1", "reason": "expired"}): (
                "0x10 0+5x5 25x40"
            )
        },
        fires_at="14m",
        resolved_at="40m",
        labels={**NODE, "peer": "orders-1", "reason": "expired"},
    ),
    # The newest verified backup is from time 0; 26 h later it is stale; a new one at minute 1601.
    "KVStoreBackupStale": Case(
        {selector("kvstore_operator_last_backup_timestamp_seconds", STORE): "0x1600 100000x100"},
        fires_at="1600m",
        resolved_at="1650m",
        quiet_at="1500m",
        labels=STORE,
        value="1d 2h 40m 0s",
    ),
    # Backups every hour; the newest verified one is from time 0, so at minute 120 it is over twice
    # the interval old (firing 10 minutes later); a new one at minute 200.
    "KVStoreBackupOverdue": Case(
        {
            selector("kvstore_operator_last_backup_timestamp_seconds", STORE): "0x200 12000x100",
            selector("kvstore_operator_backup_interval_seconds", STORE): "3600x300",
        },
        fires_at="131m",
        resolved_at="210m",
        quiet_at="110m",
        labels=STORE,
        value="2h 11m 0s",
    ),
    "KVStoreBackupFailed": Case(
        {selector("kvstore_operator_backups_total", {**STORE, "result": "failed"}): "0x10 1x100"},
        fires_at="20m",
        resolved_at="90m",
        labels=STORE,
    ),
    # 90 % full from minute 6 to 25.
    "KVStoreDiskNearlyFull": Case(
        {
            selector("kvnode_data_disk_free_bytes", NODE): "50x5 10x20 50x20",
            selector("kvnode_data_disk_size_bytes", NODE): "100x50",
        },
        fires_at="20m",
        resolved_at="40m",
        labels=NODE,
        value="90%",
    ),
    # Rounds every minute, none from minute 60 to 160, then again.
    "KVStoreAntiEntropyStalled": Case(
        {selector("kvnode_anti_entropy_rounds_total", NODE): "0+1x60 60x100 60+1x30"},
        fires_at="140m",
        resolved_at="175m",
        labels=NODE,
    ),
    "KVStoreDegraded": Case(
        {selector("kvstore_operator_condition", {**STORE, "type": "Degraded"}): "0x5 1x30 0x20"},
        fires_at="25m",
        resolved_at="45m",
        labels={**STORE, "type": "Degraded"},
    ),
    "KVStoreReconcileErrors": Case(
        {
            selector("kvstore_operator_reconcile_errors_total", {**STORE, "step": "membership"}): (
                "0+1x60 60x60"
            )
        },
        fires_at="30m",
        resolved_at="100m",
        labels={**STORE, "step": "membership"},
    ),
}


@dataclass
class Rules:
    groups: list[Body]
    by_alert: dict[str, Body] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_alert = {r["alert"]: r for g in self.groups for r in g["rules"] if "alert" in r}


@pytest.fixture(scope="module")
def rules() -> Rules:
    rule = render(VALUE_SETS["metrics"]).one("PrometheusRule")
    return Rules(rule["spec"]["groups"])


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def expand(template: str, labels: dict[str, str], value: str) -> str:
    """A rule's annotation as Prometheus renders it for this alert: ``$labels.<name>`` and
    ``$value`` (its formatting, e.g. humanizeDuration, given by the case)."""
    out = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], template)
    out = re.sub(r"\{\{ \$value( \| \w+)? \}\}", value, out)
    assert "{{" not in out, f"an annotation this test cannot expand: {template!r}"
    return out


def test_every_alert_has_a_case(rules: Rules) -> None:
    assert set(rules.by_alert) == set(CASES)


def test_promtool_checks_the_rules(rules: Rules, tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rules.groups}))
    result = promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules.by_alert)} rules found" in result.stdout


def test_promtool_refuses_a_broken_rule(rules: Rules, tmp_path: Path) -> None:
    """The check above can fail: a rule with a PromQL syntax error does not pass."""
    broken = [{"name": "x", "rules": [{"alert": "A", "expr": "sum by (pod (up)"}]}]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": broken}))
    assert promtool("check", "rules", "rules.yaml", cwd=tmp_path).returncode != 0


def unit_test(rules: Rules, names: list[str]) -> Body:
    tests: list[Body] = []
    for name in names:
        case = CASES[name]
        rule = rules.by_alert[name]
        labels = {**case.labels, **rule["labels"]}
        annotations = {k: expand(v, labels, case.value) for k, v in rule["annotations"].items()}
        fired = {"exp_labels": labels, "exp_annotations": annotations}
        tests.append(
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in case.series.items()],
                "alert_rule_test": [
                    {"eval_time": case.quiet_at, "alertname": name, "exp_alerts": []},
                    {"eval_time": case.fires_at, "alertname": name, "exp_alerts": [fired]},
                    {"eval_time": case.resolved_at, "alertname": name, "exp_alerts": []},
                ],
            }
        )
    return {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_alert_fires_and_resolves(rules: Rules, tmp_path: Path, name: str) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rules.groups}))
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(unit_test(rules, [name])))
    result = promtool("test", "rules", "test.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_wrong_expectation_fails(rules: Rules, tmp_path: Path) -> None:
    """promtool test rules can fail here: expecting the node-down alert while all are Ready."""
    spec = unit_test(rules, ["KVStoreNodeDown"])
    checks = spec["tests"][0]["alert_rule_test"]
    checks[0]["exp_alerts"] = checks[1]["exp_alerts"]  # "firing" at minute 1, before the fault
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rules.groups}))
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(spec))
    assert promtool("test", "rules", "test.yaml", cwd=tmp_path).returncode != 0


def test_a_wrong_annotation_fails(rules: Rules, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rendered summary is compared too: "2 member(s) not Ready" is not what fires."""
    monkeypatch.setattr(CASES["KVStoreNodeDown"], "value", "2")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rules.groups}))
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(unit_test(rules, ["KVStoreNodeDown"])))
    assert promtool("test", "rules", "test.yaml", cwd=tmp_path).returncode != 0
