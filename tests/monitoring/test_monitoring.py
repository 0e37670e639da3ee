"""What the chart ships for operators (deploy/monitoring): the alert rules pass `promtool check rules`
and their unit tests (`promtool test rules`: each alert fires on the series it is about, and not
before its `for`); every metric the rules and the Grafana dashboard query exists: uplion's own in
the services' code, Pulsar's in a real broker's /metrics."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from pathlib import Path

import pulsar
import yaml

from uplion.core.topics import Topics
from uplion.devstack.gotools import promtool
from uplion.devstack.pulsar import Pulsar

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
SERVICE_SOURCES = ["gateway", "worker", "billing", "authz", "accounts", "ratelimit", "operator", "web", "core"]
METRIC = re.compile(r"\b((?:uplion|pulsar)_[a-zA-Z0-9_]+)\b")
DEFINED = re.compile(r'(?:Counter|Gauge|Histogram|Summary)\(\s*"([a-z0-9_]+)"|Name:\s*"([a-z0-9_]+)"')
SUFFIXES = ("_bucket", "_sum", "_count", "_created")


def queries() -> list[str]:
    rules = yaml.safe_load((MONITORING / "alerts.yaml").read_text())
    out = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    dashboard = json.loads((MONITORING / "dashboard.json").read_text())
    return out + [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def uplion_metrics() -> set[str]:
    names: set[str] = set()
    for folder in SERVICE_SOURCES:
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".go") and "node_modules" not in path.parts:
                names |= {a or b for a, b in DEFINED.findall(path.read_text(errors="replace"))}
    return names


def exists(name: str, known: set[str]) -> bool:
    return name in known or any(name.endswith(s) and name.removesuffix(s) in known for s in SUFFIXES)


def test_alert_rules_check_and_their_unit_tests_pass() -> None:
    tool = str(promtool())
    checked = subprocess.run([tool, "check", "rules", "alerts.yaml"], cwd=MONITORING, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 6 rules found" in checked.stdout
    tested = subprocess.run([tool, "test", "rules", "alerts-test.yaml"], cwd=MONITORING, capture_output=True, text=True)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_queried_metric_exists(broker: Pulsar) -> None:
    # a model's queue with a waiting task: the broker exports topic and subscription metrics for it
    client = pulsar.Client(broker.service_url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error),
                           authentication=broker.authentication())  # fmt: skip
    topics = Topics()
    client.subscribe(topics.tasks("monitoring-probe"), topics.subscription("monitoring-probe")).close()
    client.create_producer(topics.tasks("monitoring-probe")).send(b"probe")
    client.close()
    with urllib.request.urlopen(f"{broker.admin_url}/metrics/", timeout=30) as resp:
        exported = set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", resp.read().decode(), re.M))
    ours = uplion_metrics()
    assert {"uplion_gateway_requests_total", "uplion_worker_tasks_total"} <= ours  # the source scan works
    used = {m for q in queries() for m in METRIC.findall(q)}
    assert {"uplion_gateway_request_seconds_bucket", "pulsar_storage_backlog_age_seconds"} <= used  # the scan works
    missing = sorted(m for m in used if not exists(m, ours if m.startswith("uplion_") else exported))
    assert missing == [], f"queried metrics no service or broker exports: {missing}"
