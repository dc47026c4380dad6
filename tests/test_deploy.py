"""Deployment files checked by the tools that read them: docker-compose parses the compose
file, promtool checks and unit-tests the alert rules, systemd-analyze verifies the unit, and
every metric the Grafana dashboard and the rules query is one a running node exposes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
# PromQL words and Prometheus' own series, not mammo-node metrics
NOT_OURS = {"up"}


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} not installed: `make test` installs the Debian package {package}"
    return path


def run(*command: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=cwd)


def test_docker_compose_file_is_valid_and_the_check_can_fail(tmp_path: Path) -> None:
    compose = tool("docker-compose", "docker-compose")
    ok = run(compose, "-f", str(REPO / "docker-compose.yml"), "config", "-q")
    assert ok.returncode == 0, ok.stderr
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(
        (REPO / "docker-compose.yml").read_text().replace("depends_on:", "depends_on: 3\n    x:")
    )
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    assert run(compose, "-f", str(broken), "config", "-q", cwd=tmp_path).returncode != 0


def test_alert_rules_pass_promtool_check_and_unit_tests() -> None:
    promtool = tool("promtool", "prometheus")
    checked = run(promtool, "check", "rules", "alerts.yml", cwd=DEPLOY / "prometheus")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 10 rules found" in checked.stdout
    tested = run(promtool, "test", "rules", "alerts_test.yml", cwd=DEPLOY / "prometheus")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = tool("systemd-analyze", "systemd")
    cli = str(Path(sys.executable).parent / "mammo-node")
    unit = tmp_path / "mammo-node.service"
    text = (DEPLOY / "systemd" / "mammo-node.service").read_text()
    assert "ExecStart=/opt/mammo-node/.venv/bin/mammo-node serve" in text
    # verify with an executable that exists on this machine (the unit names the install path)
    unit.write_text(text.replace("/opt/mammo-node/.venv/bin/mammo-node", cli))
    verified = run(analyze, "verify", str(unit))
    assert verified.returncode == 0, verified.stderr
    unit.write_text(text.replace("ExecStart=", "ExecStrat="))
    assert "Unknown key" in run(analyze, "verify", str(unit)).stderr


def _queried_metrics() -> set[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "mammo-node.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    exprs += re.findall(r"expr: (.+)", (DEPLOY / "prometheus" / "alerts.yml").read_text())
    names = set()
    for expr in exprs:
        names.update(re.findall(r"\b(mammo_[a-z_]+)", expr))
    return names


def test_dashboard_and_rules_query_only_metrics_the_node_exposes(node_factory: Any) -> None:
    node = node_factory()
    text = httpx.get(f"http://127.0.0.1:{node.web.port}/metrics", timeout=30).text
    exposed = set(re.findall(r"^# TYPE (\S+) ", text, flags=re.MULTILINE))
    queried = _queried_metrics()
    assert len(queried) > 15
    missing = set()
    for name in queried - NOT_OURS:
        base = re.sub(r"_(total|bucket|sum|count)$", "", name)
        if name not in exposed and base not in exposed:
            missing.add(name)
    assert missing == set(), f"queried but not exposed: {sorted(missing)}"
