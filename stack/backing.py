"""The services a cluster provides around the chart, as real servers on this machine.

PostgreSQL (Debian), Redis (Debian), an S3-compatible object store (moto's server mode), a git server
(git's own daemon), Prometheus and Alertmanager (Debian) and a webhook sink standing in for the paging
and chat services outside the machine. Prometheus and Alertmanager are configured the way the
Prometheus operator configures them from the chart's PodMonitors, PrometheusRule and
AlertmanagerConfig (:func:`prometheus_config`, :func:`alertmanager_config`): the rules and routes are
the chart's own, unchanged.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from stack.manifests import Manifests, Pod

__all__ = ["Addresses", "postgres_bin", "new_secrets", "prometheus_config", "alertmanager_config", "needs_root"]

NAMESPACE = "mlops"
MONITORING = "monitoring"
DATABASES = ("mlflow", "feast", "airflow", "zm")
BUCKETS = ("zero-margin-state", "zero-margin-data", "zero-margin-mlflow")


class Addresses:
    """Loopback addresses: one per backing service and per pod, as a cluster gives each its own IP."""

    BASE = "127.42"
    BACKING = {"postgresql": 1, "redis": 2, "s3": 3, "git": 4, "prometheus": 5, "alertmanager": 6, "sink": 7,
               "oidc": 8}

    @classmethod
    def backing(cls, name: str) -> str:
        return f"{cls.BASE}.1.{cls.BACKING[name]}"

    @classmethod
    def pod(cls, index: int) -> str:
        return f"{cls.BASE}.2.{index + 1}"

    @classmethod
    def airflow(cls, index: int) -> str:
        return f"{cls.BASE}.3.{index + 1}"


def service_names(name: str, namespace: str) -> list[str]:
    """The names a Service answers to inside the cluster."""
    return [name, f"{name}.{namespace}", f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"]


BACKING_HOSTS = {  # backing service -> the Service names clients use
    "postgresql": service_names("zm-postgresql", NAMESPACE),
    "redis": service_names("zm-redis", NAMESPACE),
    "s3": service_names("zm-s3", NAMESPACE),
    "git": service_names("zm-git", NAMESPACE),
    "prometheus": service_names("prometheus-operated", MONITORING),
    "alertmanager": service_names("alertmanager-operated", MONITORING),
    "sink": service_names("zm-alert-sink", NAMESPACE),
    "oidc": service_names("zm-oidc", NAMESPACE),  # the identity provider (stack/oidc.py)
}
OIDC_ISSUER = "http://zm-oidc.mlops.svc:9400"  # as stack/values.yaml gives it to the feature server


def needs_root() -> bool:
    return os.geteuid() == 0


def postgres_bin() -> Path:
    """Debian's PostgreSQL programs (not on PATH there)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise FileNotFoundError("PostgreSQL is not installed: apt-get install postgresql (make stack does)")
    return Path(initdb).resolve().parent


def _serving_keys() -> dict[str, str]:
    """The predictors' keys as docs/install.md makes them: a client key, Prometheus' token, Alertmanager's, the
    shadow copies' token, and their hashes."""
    from zmlops import auth

    client, client_entry = auth.new_key("clients", ("predict",))
    metrics, metrics_entry = auth.new_key("prometheus", ("metrics",))
    alerts, alerts_entry = auth.new_key("alertmanager", ("alerts",))
    shadow, shadow_entry = auth.new_key("shadow", ("predict",))
    return {"serving-client-key": client, "serving-metrics-token": metrics, "alert-receiver-token": alerts,
            "serving-shadow-token": shadow,
            "serving-api-keys": json.dumps([client_entry, metrics_entry, alerts_entry, shadow_entry])}


def new_secrets() -> dict[str, dict[str, str]]:
    """The Secrets an installer creates before `helm install` (docs/install.md), with fresh random values."""
    from zmlops.auth import userlist

    def pw() -> str:  # hex, as docs/install.md's `openssl rand -hex 16`: a urlsafe token may start with "-",
        return secrets.token_hex(16)  # which `airflow users create --password -x...` reads as an option

    db = {name: pw() for name in DATABASES}
    pg = "zm-postgresql.mlops.svc:5432"
    redis, s3_key, s3_secret = pw(), "zm-" + secrets.token_hex(6), pw()
    analyst = pw()
    return {
        "postgresql": {f"{name}-password": value for name, value in db.items()},
        "redis": {"password": redis},
        "zero-margin-secrets": {
            "pseudonymisation-key": secrets.token_hex(32),
            "mlflow-backend-store-uri": f"postgresql://mlflow:{db['mlflow']}@{pg}/mlflow",
            "feast-registry": f"postgresql+psycopg://feast:{db['feast']}@{pg}/feast",
            "feast-redis": f"zm-redis.mlops.svc:6379,password={redis}",
            "s3-access-key-id": s3_key,
            "s3-secret-access-key": s3_secret,
            "airflow-password": pw(),
            "state-db-url": f"postgresql://zm:{db['zm']}@{pg}/zm",
            "data-registry-remote": "git://zm-git.mlops.svc/data-registry.git",
            **_serving_keys(),
            **_pushgateway_users(),
            "analysts-users": userlist("analysts", {"analyst": analyst}),
            "mlflow-admin-password": pw(), "mlflow-pipelines-password": pw(), "mlflow-serving-password": pw(),
            "mlflow-flask-secret-key": secrets.token_hex(32),
        },
        "zero-margin-alerting": {
            "pagerduty-routing-key": secrets.token_hex(16),
            "slack-webhook-url": "http://zm-alert-sink.mlops.svc:9099/slack",
            "smtp-password": pw(),
        },
        "airflow-metadata-db": {"connection": f"postgresql://airflow:{db['airflow']}@{pg}/airflow"},
        "airflow-fernet-key": {"fernet-key": _fernet_key()},
        "airflow-api-secret-key": {"api-secret-key": pw()},
        "airflow-jwt-secret": {"jwt-secret": secrets.token_hex(64)},
        # the identity provider's clients (not a Secret of ours: the IdP keeps them); an analyst's tool reads features
        "zm-oidc": {"clients": json.dumps([{"client_id": "analyst-tool", "client_secret": pw(),
                                            "roles": ["feast-reader"], "audience": "zero-margin-feast"}])},
        "airflow-users": {"admin-password": pw(), "approver-password": pw(), "analyst-password": pw(),
                          "engineer-password": pw()},
        # the people of the analysts' Evidently UI (not a Secret of ours: each keeps their password)
        "analysts-ui-users": {"analyst-password": analyst},
    }


def _pushgateway_users() -> dict[str, str]:
    """The Pushgateway's users (monitoring pushes, prometheus scrapes) as `zm auth pushgateway-users` makes them."""
    from zmlops.auth import pushgateway_users

    push, scrape = secrets.token_hex(24), secrets.token_hex(24)
    return {"pushgateway-password": push, "pushgateway-scrape-user": "prometheus",
            "pushgateway-scrape-password": scrape,
            "pushgateway-users": pushgateway_users({"monitoring": push, "prometheus": scrape})}


def _fernet_key() -> str:
    import base64

    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def init_postgres(data: Path, passwords: dict[str, str]) -> None:
    """initdb with password authentication (as the postgres user when run as root, which PostgreSQL refuses)."""
    data.parent.mkdir(parents=True, exist_ok=True)
    superuser = secrets.token_hex(16)
    pwfile = data.parent / "superuser.pw"
    pwfile.write_text(superuser)
    if needs_root():
        shutil.chown(data.parent, "postgres")
        shutil.chown(pwfile, "postgres")
    run_as = ["runuser", "-u", "postgres", "--"] if needs_root() else []
    done = subprocess.run([*run_as, str(postgres_bin() / "initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8",
                           "--auth=scram-sha-256", f"--pwfile={pwfile}"], check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"initdb failed (the postgres user must be able to enter {data.parent}): "
                           f"{done.stderr.strip()[-1000:]}")
    (data.parent / "superuser.password").write_text(superuser)
    pwfile.unlink()


def create_databases(host: str, passwords: dict[str, str], superuser_password: str) -> None:
    """One role and one database per client (MLflow, Feast, Airflow, the stack's state)."""
    env = {**os.environ, "PGPASSWORD": superuser_password}
    for name in DATABASES:
        sql = (f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{name}') THEN "
               f"CREATE ROLE {name} LOGIN PASSWORD '{passwords[f'{name}-password']}'; END IF; END $$;")
        subprocess.run(["psql", "-h", host, "-U", "postgres", "-d", "postgres", "-qc", sql], check=True, env=env,
                       capture_output=True)
        exists = subprocess.run(["psql", "-h", host, "-U", "postgres", "-d", "postgres", "-tAc",
                                 f"SELECT 1 FROM pg_database WHERE datname = '{name}'"], check=True, env=env,
                                capture_output=True, text=True).stdout.strip()
        if not exists:
            subprocess.run(["psql", "-h", host, "-U", "postgres", "-d", "postgres", "-qc",
                            f"CREATE DATABASE {name} OWNER {name}"], check=True, env=env, capture_output=True)


# ------------------------------------------------------------------ the Prometheus operator's translation
def _port(pod: Pod, name: str) -> int:
    return pod.ports[name] if name in pod.ports else int(name)


def _serves(pod: Pod, port: str) -> bool:
    """A PodMonitor's endpoint names a container's port: in a pod of several containers, only that one's."""
    return port in pod.ports or (port.isdigit() and int(port) in pod.ports.values())


def prometheus_config(manifests: Manifests, pods: list[Pod], rules_file: Path, alertmanager: str,
                      namespace: str = NAMESPACE) -> dict[str, Any]:
    """prometheus.yml as the operator builds it: one job per PodMonitor over the pods it selects (an endpoint's
    ``authorization`` and ``basicAuth`` read from their Secrets)."""
    jobs = []
    for monitor in manifests.of("PodMonitor"):
        selector = monitor["spec"]["selector"].get("matchLabels", {})
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            targets = [{"targets": [f"{pod.ip}:{_port(pod, endpoint['port'])}"],
                        "labels": {"namespace": namespace, "pod": pod.pod, "container": pod.container}}
                       for pod in pods if manifests.selects(selector, pod) and _serves(pod, endpoint["port"])]
            jobs.append({
                "job_name": f"{namespace}/{monitor['metadata']['name']}",
                "scrape_interval": endpoint.get("interval", "30s"),
                "metrics_path": endpoint.get("path", "/metrics"),
                "honor_labels": bool(endpoint.get("honorLabels", False)),
                "static_configs": targets,
                **({"authorization": {"type": endpoint["authorization"].get("type", "Bearer"),
                                      "credentials": manifests.secrets[ref["name"]][ref["key"]]}}
                   if (ref := endpoint.get("authorization", {}).get("credentials")) else {}),
                **({"basic_auth": {"username": _secret(manifests, basic["username"]),
                                   "password": _secret(manifests, basic["password"])}}
                   if (basic := endpoint.get("basicAuth")) else {}),
            })
    return {
        "global": {"scrape_interval": "30s", "evaluation_interval": "30s"},
        "rule_files": [str(rules_file)],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": jobs,
    }


def prometheus_rules(manifests: Manifests) -> dict[str, Any]:
    """The rule groups of the release's PrometheusRules, as a rules file."""
    groups = [g for rule in manifests.of("PrometheusRule") for g in rule["spec"]["groups"]]
    return {"groups": groups}


def _secret(manifests: Manifests, ref: dict[str, str]) -> str:
    value = manifests.secrets.get(ref["name"], {}).get(ref["key"])
    if value is None:
        raise KeyError(f"Secret {ref['name']} has no key {ref['key']} (a monitoring resource's reference)")
    return value


def _receiver(manifests: Manifests, prefix: str, spec: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": prefix + spec["name"]}
    for hook in spec.get("webhookConfigs", []):
        item = {"url": hook["url"], "send_resolved": hook.get("sendResolved", True)}
        authorization = hook.get("httpConfig", {}).get("authorization")
        if authorization:
            item["http_config"] = {"authorization": {"type": authorization.get("type", "Bearer"),
                                                     "credentials": _secret(manifests, authorization["credentials"])}}
        out.setdefault("webhook_configs", []).append(item)
    for page in spec.get("pagerdutyConfigs", []):
        out.setdefault("pagerduty_configs", []).append({
            "url": page["url"], "routing_key": _secret(manifests, page["routingKey"]),
            "send_resolved": page.get("sendResolved", True)})
    for chat in spec.get("slackConfigs", []):
        item = {"api_url": _secret(manifests, chat["apiURL"]), "channel": chat["channel"],
                "send_resolved": chat.get("sendResolved", True)}
        item.update({k: chat[k] for k in ("title", "text") if k in chat})
        out.setdefault("slack_configs", []).append(item)
    for mail in spec.get("emailConfigs", []):
        out.setdefault("email_configs", []).append({
            "to": mail["to"], "from": mail["from"], "smarthost": mail["smarthost"],
            "auth_username": mail["authUsername"], "auth_password": _secret(manifests, mail["authPassword"]),
            "send_resolved": mail.get("sendResolved", True)})
    return out


def _route(spec: dict[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {"receiver": prefix + spec["receiver"]}
    matchers = [f'{m["name"]}{m.get("matchType", "=")}"{m["value"]}"' for m in spec.get("matchers", [])]
    if matchers:
        out["matchers"] = matchers
    for key, name in (("groupBy", "group_by"), ("groupWait", "group_wait"), ("groupInterval", "group_interval"),
                      ("repeatInterval", "repeat_interval"), ("continue", "continue")):
        if key in spec:
            out[name] = spec[key]
    if spec.get("routes"):
        out["routes"] = [_route(r, prefix) for r in spec["routes"]]
    return out


def alertmanager_config(manifests: Manifests, namespace: str = NAMESPACE) -> dict[str, Any]:
    """alertmanager.yml as the operator builds it: each AlertmanagerConfig's route under a namespace matcher,
    its receivers prefixed with ``namespace/name/`` and their secrets read from the Secrets they name."""
    routes, receivers = [], [{"name": "null"}]
    for config in manifests.of("AlertmanagerConfig"):
        prefix = f"{namespace}/{config['metadata']['name']}/"
        route = _route(config["spec"]["route"], prefix)
        route["matchers"] = [f'namespace="{namespace}"', *route.get("matchers", [])]
        route["continue"] = True
        routes.append(route)
        receivers += [_receiver(manifests, prefix, r) for r in config["spec"]["receivers"]]
    return {"route": {"receiver": "null", "group_by": ["namespace"], "routes": routes}, "receivers": receivers}


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
