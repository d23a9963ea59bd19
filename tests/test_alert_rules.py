"""Prometheus alert rules: valid, unit-tested with `promtool test rules`, and each one documented and tested."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from test_container_config import CONTRACT_METRICS, metric_names, run, tool

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "docker/prometheus/alerts.yml"
RULE_TESTS = ROOT / "docker/prometheus/alerts.test.yml"
# The failures the issue names, and the alert that answers each.
EXPECTED_ALERTS = {
    "MedimagingHighErrorRate",  # error rate
    "MedimagingLatencyP99OverBudget",  # p99 over budget
    "MedimagingNotReady",  # service not ready
    "MedimagingQueuePersistentlyFull",  # queue persistently full
    "MedimagingNoScrapes",  # no scrapes (target down)
    "MedimagingNoTargets",  # no scrapes (no target at all)
}


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_rules_are_valid() -> None:
    result = run(tool("promtool"), "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    result = run(tool("promtool"), "test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_named_failure_has_a_documented_alert() -> None:
    alerts = {rule["alert"]: rule for rule in rules() if "alert" in rule}
    assert set(alerts) == EXPECTED_ALERTS
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"page", "ticket"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        assert rule.get("for"), f"{name} fires on a single evaluation"


def test_rules_read_only_contract_metrics() -> None:
    read = set().union(*(metric_names(rule["expr"]) for rule in rules()))
    assert read <= CONTRACT_METRICS, f"not in contract 4: {sorted(read - CONTRACT_METRICS)}"


def test_every_alert_is_shown_firing_and_quiet_by_a_unit_test() -> None:
    cases = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    checks = [check for case in cases for check in case.get("alert_rule_test", [])]
    fired = {check["alertname"] for check in checks if check["exp_alerts"]}
    quiet = {check["alertname"] for check in checks if not check["exp_alerts"]}
    assert fired == EXPECTED_ALERTS, f"never shown firing: {sorted(EXPECTED_ALERTS - fired)}"
    assert quiet == EXPECTED_ALERTS, f"never shown quiet: {sorted(EXPECTED_ALERTS - quiet)}"
