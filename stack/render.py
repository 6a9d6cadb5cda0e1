"""Render the zero-margin chart offline, as ``helm install`` would against a cluster (delivery environment).

    .venvs/delivery/bin/python -m stack.render [-f values.yaml ...] [--api-version monitoring.coreos.com/v1 ...]

prints the rendered documents as one JSON list. Helm's Go SDK renders with the Kubernetes
version and the extra API groups given (``.Capabilities``), which a cluster reports by itself:
the chart renders its Prometheus operator objects only where those APIs exist.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

__all__ = ["render", "OPERATOR_APIS", "KUBE_VERSION"]

CHART = Path(__file__).resolve().parents[1] / "charts" / "zero-margin"
KUBE_VERSION = "v1.31.0"
# The API groups of a cluster with the Prometheus operator (kube-prometheus-stack) installed.
OPERATOR_APIS = ("monitoring.coreos.com/v1", "monitoring.coreos.com/v1alpha1")


def render(values: dict[str, Any] | None = None, *, name: str = "zm", namespace: str = "mlops",
           api_versions: tuple[str, ...] = OPERATOR_APIS, chart: Path = CHART) -> list[dict[str, Any]]:
    """The chart's documents for ``values``, in a cluster serving ``api_versions`` besides the core ones.

    helm-python-sdk's ``Chart.render`` has no option for the cluster's API versions (its C API does:
    ``api_versions`` and ``kube_version`` in the render options), so the call goes one level down.
    """
    import helm_python as helm
    from helm_python import _native

    loaded = helm.Chart.load(str(chart))
    options = {"name": name, "namespace": namespace, "is_install": True, "kube_version": KUBE_VERSION,
               "api_versions": list(api_versions)}
    out = json.loads(_native.call_string("helm_render", loaded._raw(), json.dumps(values or {}), json.dumps(options)))
    docs: list[dict[str, Any]] = []
    for path in sorted(out):
        docs.extend(d for d in yaml.safe_load_all(out[path]) if d)
    return docs


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        base[key] = _merge(dict(base.get(key) or {}), value) if isinstance(value, dict) else value
    return base


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack.render", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-f", "--values", action="append", type=Path, default=[], help="values file (repeatable)")
    parser.add_argument("--name", default="zm", help="release name (default zm)")
    parser.add_argument("--namespace", default="mlops", help="namespace (default mlops)")
    parser.add_argument("--api-version", action="append", default=None,
                        help="an API group/version the cluster serves (default: the Prometheus operator's)")
    args = parser.parse_args(argv)
    values: dict[str, Any] = {}
    for path in args.values:
        values = _merge(values, yaml.safe_load(path.read_text()) or {})
    apis = tuple(args.api_version) if args.api_version is not None else OPERATOR_APIS
    json.dump(render(values, name=args.name, namespace=args.namespace, api_versions=apis), sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
