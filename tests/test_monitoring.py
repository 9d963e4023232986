"""The Grafana dashboard and the Prometheus alerting rules in docs/ against the relay's own /metrics."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from braze_sim.server import Simulator
from relay import store
from tests.helpers import WRITE_KEY
from tests.processes import ROOT, Processes, wait_for

RULES = ROOT / "docs" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "docs" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "docs" / "grafana" / "braze-relay.json"
OPERATIONS = ROOT / "docs" / "operations.md"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="no promtool (Debian's prometheus package; scripts/test installs it as root)"
)
TD = {"Authorization": f"TD1 {WRITE_KEY}"}
# Grafana's variables, replaced by what they stand for when Prometheus gets the query.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "6h", "$lane": ".*"}
# PromQL words that are not metric names: operators and modifiers (functions are known by their "(").
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "inf", "nan"}
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


def rules() -> list[dict[str, Any]]:
    """Every alerting rule of the rules file."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_targets() -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) of every query of the dashboard, Grafana's variables replaced."""
    board = json.loads(DASHBOARD.read_text())
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            yield panel["title"], expr


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (strings, label matchers, ranges and label lists cut)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        if expr[match.end() :].lstrip().startswith("("):
            continue  # a function or an aggregation
        if match.group(0).lower() not in PROMQL_WORDS:
            names.add(match.group(0))
    return names


def test_metric_names_are_found_in_promql() -> None:
    """The name finder sees through functions, aggregations, matchers, ranges and operators."""
    expr = (
        'histogram_quantile(0.95, sum by (lane, le) (rate(a_bucket{lane=~".*:consent", x="by(b)"}[5m])))'
        " > 60 and on (lane) deriv(b[15m]) > 0 unless c offset 1h or absent(d_total) / max without (job) (e)"
    )
    assert metric_names(expr) == {"a_bucket", "b", "c", "d_total", "e"}


def exported_names(text: str) -> set[str]:
    """Every series name a /metrics page can hold: families it declares, with their types' suffixes."""
    names = set()
    for family in text_string_to_metric_families(text):
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in HISTOGRAM_SUFFIXES)
        else:
            names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


def test_dashboard_and_rules_use_only_metrics_the_relay_exports(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """Each name in the dashboard's queries and the rules' expressions is on /metrics after a workload."""
    braze.faults.fail_next = 1
    braze.faults.rate_limit_next = 1
    braze.faults.rate_limit_reset_s = 0.2
    braze.faults.reject_item = lambda array, obj: "refused" if obj.get("name") == "bad" else None
    events = [{"external_id": "mon-1", "name": name} for name in ("a", "b", "bad")]
    assert client.post("/db/events", json={"records": events}, headers=TD).status_code == 200
    assert client.post("/db/events", json={"records": [{"name": "x"}]}, headers=TD).status_code == 422
    consent = {"external_id": "mon-1", "subscription_group_id": "g", "subscription_state": "subscribed"}
    assert client.post("/db/consent", json={"records": [consent]}, headers=TD).status_code == 200
    drain()
    page = client.get("/metrics")
    assert page.status_code == 200
    exported = exported_names(page.get_data(as_text=True))
    assert {"relay_workers", "relay_delivery_lag_seconds_bucket", "relay_records_delivered_total"} <= exported

    used: dict[str, set[str]] = {}
    for rule in rules():
        used[f"rule {rule['alert']}"] = metric_names(rule["expr"])
    for title, expr in dashboard_targets():
        used.setdefault(f"panel {title}", set()).update(metric_names(expr))
    board = json.loads(DASHBOARD.read_text())
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":  # label_values(metric, label)
            found = re.fullmatch(r"label_values\((\w+),\s*\w+\)", variable["definition"])
            assert found, variable["definition"]
            used[f"variable {variable['name']}"] = {found.group(1)}
    assert len(used) >= 25
    for where, names in used.items():
        assert names, f"{where} reads no metric"
        assert names <= exported, f"{where} reads {sorted(names - exported)}, which /metrics does not export"
    dashboard_names = set().union(*(names for where, names in used.items() if where.startswith("panel")))
    families = {re.sub(r"(_total|_bucket|_count|_sum)$", "", name) for name in exported}
    shown = {re.sub(r"(_total|_bucket|_count|_sum)$", "", name) for name in dashboard_names}
    assert families - shown <= {"relay_records_received"}, "a metric the dashboard does not show"


def test_dashboard_is_importable_grafana_json() -> None:
    """One dashboard, a Prometheus data source variable on every panel and query, unique ids, no overlaps."""
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] == "braze-relay" and board["title"] == "braze-relay"
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["description"] and panel["targets"], panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]


@needs_promtool
def test_alerting_rules_pass_promtool_check() -> None:
    """`promtool check rules` accepts the rules file."""
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout


@needs_promtool
def test_alerting_rules_fire_as_their_unit_tests_say() -> None:
    """`promtool test rules`: each alert fires in its scenario, with its text; a healthy relay fires none."""
    assert PROMTOOL is not None
    tested = yaml.safe_load(RULE_TESTS.read_text())
    named = {case["alertname"] for test in tested["tests"] for case in test["alert_rule_test"]}
    firing = {
        case["alertname"]
        for test in tested["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert named == firing == {rule["alert"] for rule in rules()}, "an alert without a scenario"
    done = subprocess.run(
        [PROMTOOL, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_dashboard_queries_parse_as_promql(tmp_path: Path) -> None:
    """Each dashboard query, its Grafana variables replaced, is PromQL that promtool accepts."""
    assert PROMTOOL is not None
    recorded = [
        {"record": f"dashboard:query_{index}", "expr": expr}
        for index, (_, expr) in enumerate(dashboard_targets())
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recorded}]}))
    done = subprocess.run(
        [PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_its_section_in_the_operations_guide() -> None:
    """Each rule's runbook link names a section of docs/operations.md that says what to do."""
    headings = re.findall(r"^### (\w+)\n", OPERATIONS.read_text(), re.MULTILINE)
    for rule in rules():
        assert rule["annotations"]["runbook"] == f"docs/operations.md#{rule['alert'].lower()}"
        assert rule["alert"] in headings, f"docs/operations.md has no section for {rule['alert']}"
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def scrape_workers(base: str) -> dict[str, float]:
    """relay_workers by queue, from the web process's /metrics."""
    text = requests.get(f"{base}/metrics", timeout=10).text
    return {
        sample.labels["queue"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "relay_workers"
        for sample in family.samples
    }


@pytest.mark.e2e
def test_workers_gauge_follows_the_worker_processes(stack: tuple[Processes, str]) -> None:
    """relay_workers counts the Procfile's workers per queue, and drops when one stops."""
    procs, base = stack
    assert scrape_workers(base) == {store.QUEUE_CONSENT: 0, store.QUEUE_BULK: 0}
    worker = procs.start("worker")
    procs.start("consent")
    both = {store.QUEUE_CONSENT: 2, store.QUEUE_BULK: 1}
    wait_for(lambda: scrape_workers(base) == both, 30, f"relay_workers {both}")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0
    assert scrape_workers(base) == {store.QUEUE_CONSENT: 1, store.QUEUE_BULK: 0}
