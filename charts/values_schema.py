"""Generate a chart's values.schema.json from its values.yaml and the `# --` comment above every key.

values.yaml stays the one documented contract: each key's comment becomes its schema description,
its value the default and (with the constraints below) its type. Our own objects refuse unknown keys
(`additionalProperties: false`), so a typo fails `helm install` with the key's path.

`inference.models` (one switch per model family) is written from the model catalog (zmlops/catalog.py,
with the families ZM_FAMILY_PLUGINS adds) between its two marker comments, before the schema is built.

    python charts/values_schema.py charts/zero-margin            # write values.schema.json
    python charts/values_schema.py charts/zero-margin --check    # exit 1 when the file is stale
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # zmlops.catalog: standard library only
from zmlops import catalog  # noqa: E402

QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti)?$"
DIGEST = r"^(sha256:[a-f0-9]{64})?$"
DURATION = r"^[0-9]+(ms|s|m|h)$"
TAG = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"  # RE2 (Helm is Go): no look-ahead; "latest" refused by `not`

# Constraints beyond the type, by path ("*" matches any key at that level).
CONSTRAINTS: dict[str, dict[str, Any]] = {
    "images.*.tag": {"pattern": TAG, "not": {"enum": ["latest"]}},
    "images.*.digest": {"pattern": DIGEST},
    "images.pullPolicy": {"enum": ["IfNotPresent", "Always", "Never"]},
    "settings.monitoring.*": {"minimum": 0, "maximum": 1},
    "settings.reports.retentionDays": {"minimum": 1},
    "settings.privacy.erasureRetrainDays": {"minimum": 1},
    "inference.deploymentMode": {"enum": ["RawDeployment", "Standard", "Serverless"]},
    "inference.alias": {"pattern": r"^[a-z][a-z0-9-]*$"},
    "inference.minReplicas": {"minimum": 1},
    "inference.maxReplicas": {"minimum": 1},
    "inference.scaleMetric": {"enum": ["cpu", "memory", "concurrency", "rps"]},
    "inference.scaleTarget": {"minimum": 1},
    "inference.terminationGracePeriodSeconds": {"minimum": 5},
    "inference.canary.trafficPercent": {"minimum": 1, "maximum": 99},
    "inference.features.timeoutMs": {"minimum": 1},
    "inference.features.cacheSize": {"minimum": 0},
    "inference.features.cacheSeconds": {"minimum": 1},
    "inference.recommendation.rankingTableMb": {"minimum": 0},
    "inference.shadow.alias": {"pattern": r"^([a-z][a-z0-9-]*)?$"},
    "inference.shadow.share": {"minimum": 0, "maximum": 1},
    "inference.shadow.mode": {"enum": ["predictor", "process"]},
    "inference.topologySpread.whenUnsatisfiable": {"enum": ["ScheduleAnyway", "DoNotSchedule"]},
    "*.resources.*.cpu": {"pattern": QUANTITY},
    "*.resources.*.memory": {"pattern": QUANTITY},
    "*.resources.*.ephemeral-storage": {"pattern": QUANTITY},
    "settings.objectStoreUrl": {"pattern": r"^[a-z0-9]+://"},
    "settings.requestLog.flushSeconds": {"minimum": 1},
    "settings.requestLog.maxBufferMb": {"minimum": 1},
    "settings.requestLog.retentionDays": {"minimum": 1},
    "inference.pollSeconds": {"minimum": 1},
    "mlflow.allowedHosts": {"items": {"type": "string"}},
    "alerting.groupWait": {"pattern": DURATION},
    "alerting.groupInterval": {"pattern": DURATION},
    "alerting.repeatInterval": {"pattern": DURATION},
    "alerting.pagerduty.url": {"pattern": r"^https?://"},
    "*.replicas": {"minimum": 1},
    "alertReceiver.airflowApiUrl": {"pattern": r"^https?://"},
    "rollout.prometheusUrl": {"pattern": r"^https?://"},
    "rollout.windowSeconds": {"minimum": 5},
    "networkPolicy.externalEgress": {
        "items": {
            "type": "object",
            "additionalProperties": False,
            "required": ["cidr", "ports"],
            "properties": {
                "cidr": {"type": "string", "description": "CIDR block (a.b.c.d/n).",
                         "pattern": r"^[0-9.]+/[0-9]+$"},
                "ports": {"type": "array", "description": "TCP ports.",
                          "items": {"type": "integer", "minimum": 1, "maximum": 65535}},
            },
        }
    },
    "images.pullSecrets": {"items": {"type": "string"}},
}
# Maps whose keys are free (labels and selectors): string values, any key.
FREE_MAPS = ("monitoring.labels", "monitoring.alertLabels", "networkPolicy.clientNamespaceSelector",
             "networkPolicy.prometheusNamespaceSelector", "networkPolicy.alertmanagerNamespaceSelector",
             "networkPolicy.airflowPodSelector", "networkPolicy.analystsNamespaceSelector")

KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(?:\s|$)")


def comments(text: str) -> dict[str, str]:
    """Description of every key path, from the `# --` comment block just above it."""
    out: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = [stripped[4:].strip()]
            continue
        if stripped.startswith("#") and pending:
            pending.append(stripped[1:].strip())
            continue
        match = KEY.match(line)
        if match and not stripped.startswith("-"):
            indent = len(match["indent"])
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, match["key"]))
            if pending:
                out[".".join(k for _, k in stack)] = " ".join(pending)
        if stripped and not stripped.startswith("#"):
            pending = []
    return out


def _matches(pattern: str, path: str) -> bool:
    a, b = pattern.split("."), path.split(".")
    return len(a) == len(b) and all(x in ("*", y) for x, y in zip(a, b, strict=True))


def _type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "string"


def node(path: str, value: Any, docs: dict[str, str]) -> dict[str, Any]:
    description = docs.get(path)
    if description is None:
        raise SystemExit(f"values.yaml: key {path!r} has no `# --` comment")
    schema: dict[str, Any] = {"type": _type(value), "description": description}
    if path in FREE_MAPS:
        schema.update(additionalProperties={"type": "string"}, default=value)
    elif isinstance(value, dict):
        schema["additionalProperties"] = False
        schema["properties"] = {k: node(f"{path}.{k}" if path else k, v, docs) for k, v in value.items()}
    else:
        schema["default"] = value
    for pattern, extra in CONSTRAINTS.items():
        if _matches(pattern, path):
            schema.update(extra)
    return schema


MODELS_BEGIN = "  # >>> inference.models: written by charts/values_schema.py from zmlops/catalog.py\n"
MODELS_END = "  # <<< inference.models\n"


def with_models(text: str) -> str:
    """values.yaml with its ``inference.models`` block written from the catalog (enabled flags kept)."""
    if MODELS_BEGIN not in text or MODELS_END not in text:
        raise SystemExit("values.yaml: the inference.models markers are missing")
    head, rest = text.split(MODELS_BEGIN, 1)
    old, tail = rest.split(MODELS_END, 1)
    was = (yaml.safe_load(old) or {}).get("models") or {}
    lines = ["  # -- Per-family switches (one per model family of the catalog).\n", "  models:\n"]
    for name, e in catalog.ENTRIES.items():
        enabled = bool((was.get(name) or {}).get("enabled", True))
        lines += [f"    # -- {e.title}.\n", f"    {name}:\n", "      # -- Deploy this family.\n",
                  f"      enabled: {str(enabled).lower()}\n"]
    return head + MODELS_BEGIN + "".join(lines) + MODELS_END + tail


def build(chart: Path) -> dict[str, Any]:
    text = with_models((chart / "values.yaml").read_text())
    values = yaml.safe_load(text)
    docs = comments(text)
    return {
        "$schema": "https://json-schema.org/draft-07/schema#",
        "title": f"Values of the {chart.name} chart (generated from values.yaml by charts/values_schema.py)",
        "type": "object",
        "additionalProperties": False,
        "properties": {k: node(k, v, docs) for k, v in values.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("chart", type=Path, help="chart directory holding values.yaml")
    parser.add_argument("--check", action="store_true",
                        help="fail when values.yaml's models or values.schema.json differ from what they derive from")
    args = parser.parse_args(argv)
    text = json.dumps(build(args.chart), indent=2) + "\n"
    target, values = args.chart / "values.schema.json", args.chart / "values.yaml"
    models = with_models(values.read_text())
    if args.check:
        stale = [p for p, want in ((values, models), (target, text)) if not p.exists() or p.read_text() != want]
        for path in stale:
            print(f"{path} is stale: run python charts/values_schema.py {args.chart}", file=sys.stderr)
        return 1 if stale else 0
    values.write_text(models)
    target.write_text(text)
    print(f"wrote {values} (inference.models) and {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
