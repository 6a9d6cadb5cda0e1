"""Prometheus rules: generated file up to date, `promtool check rules`, and `promtool test rules` scenarios.

promtool comes from the Debian `prometheus` package (`make test` installs it). The scenarios in
rules_test.yaml check when each alert fires and that it stays silent for healthy models; annotations
are checked by `promtool check rules` (template syntax) and are stripped from the copy the scenarios
run against, so a wording change does not need the scenarios rewritten.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from monitoring import rules
from tests import needs

HERE = Path(__file__).parent
pytestmark = needs.binary("promtool")


def test_rules_file_is_generated_from_the_module() -> None:
    assert rules.main(["--check"]) == 0, "run: python -m monitoring.rules"


def test_promtool_check_rules() -> None:
    out = subprocess.run(["promtool", "check", "rules", str(rules.RULES_FILE)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_every_alert_has_a_scenario_that_fires_it_and_a_healthy_one() -> None:
    alerts = {r["alert"] for g in rules.groups()["groups"] for r in g["rules"] if "alert" in r}
    cases = yaml.safe_load((HERE / "rules_test.yaml").read_text())["tests"]
    fired = {c["alertname"] for t in cases for c in t.get("alert_rule_test", []) if c.get("exp_alerts")}
    silent = {c["alertname"] for t in cases if t["name"] == "healthy" for c in t["alert_rule_test"]}
    assert alerts == fired == silent


def test_promtool_test_rules(tmp_path: Path) -> None:
    groups = rules.groups()
    for group in groups["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(groups, sort_keys=False))
    scenarios = yaml.safe_load((HERE / "rules_test.yaml").read_text())
    scenarios["rule_files"] = ["rules.yaml"]
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(scenarios, sort_keys=False))
    out = subprocess.run(["promtool", "test", "rules", "test.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_a_broken_rule_fails_its_scenario(tmp_path: Path) -> None:
    """The scenarios can fail: with the fast burn-rate threshold raised tenfold, the page never comes."""
    groups = rules.groups()
    for group in groups["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
            if rule.get("alert") == "ZmAvailabilityBudgetBurn1H":
                rule["expr"] = rule["expr"].replace("14.4 *", "144 *")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(groups, sort_keys=False))
    scenarios = yaml.safe_load((HERE / "rules_test.yaml").read_text())
    scenarios["rule_files"] = ["rules.yaml"]
    # only the scenarios that test this alert (the two-day ones take promtool seconds each and never fire it)
    scenarios["tests"] = [t for t in scenarios["tests"] if any(
        c["alertname"] == "ZmAvailabilityBudgetBurn1H" and c.get("exp_alerts") for c in t.get("alert_rule_test", []))]
    assert scenarios["tests"]
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(scenarios, sort_keys=False))
    out = subprocess.run(["promtool", "test", "rules", "test.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode != 0 and "ZmAvailabilityBudgetBurn1H" in out.stdout + out.stderr


def test_every_alert_has_its_runbook_section() -> None:
    """The alerts' runbook_url points at docs/runbooks.md#<alert in lower case>: that heading must exist."""
    text = (HERE.parents[1] / "docs" / "runbooks.md").read_text()
    headings = {line[3:].strip().lower() for line in text.splitlines() if line.startswith("## ")}
    for group in rules.groups()["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                anchor = rule["annotations"]["runbook_url"].split("#", 1)[1]
                assert anchor in headings, f"docs/runbooks.md has no section for {rule['alert']}"
