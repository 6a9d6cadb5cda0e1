"""The rendered chart read as a kubelet reads it: which processes to start, with what command and environment.

Everything here is read from the rendered manifests and never written a second time: a workload's
command, arguments, environment (``envFrom`` ConfigMaps and Secrets, ``env`` values, ``secretKeyRef``,
``fieldRef``, ``$(VAR)`` expansion), ports, readiness probe, labels, ``emptyDir``, ``secret`` and ``configMap``
mounts. Every container of a pod is a process of its own; the containers of one pod share its address and its
disk. Three translations make a manifest runnable on one machine, and only these:

- **images**: an image's programs come from the environment it is built from (``.venvs/serving``,
  ``.venvs/pipelines``, a Debian binary for the Pushgateway); image paths under ``/app`` are this
  checkout (the image copies it there);
- **the pod network**: each pod has its own loopback address; ``0.0.0.0`` in an argument or a
  variable (all of the pod's interfaces) becomes that address, and so does ``127.0.0.1`` (the pod's own
  loopback, which its containers share and no other pod reaches; here other pods could, as no NetworkPolicy
  is enforced on one machine);
- **volumes**: every ``emptyDir`` mount is a folder of the pod's own working directory, created empty
  when the pod starts; a ``secret`` or ``configMap`` mount is such a folder holding the object's keys (or
  its ``items``) as files readable by the owner only, as the kubelet projects them.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["REPO", "Image", "IMAGES", "Pod", "Manifests", "expand"]

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Image:
    """Where an image's programs come from on this machine."""

    bin: Path | None  # a virtual environment's bin folder, or None for system programs
    entrypoint: tuple[str, ...] = ()  # the image's ENTRYPOINT, used when a container sets no command


IMAGES = {
    "ghcr.io/zero-margin/serving": Image(REPO / ".venvs" / "serving" / "bin"),
    "ghcr.io/zero-margin/pipelines": Image(REPO / ".venvs" / "pipelines" / "bin"),
    # Debian's build of the image's program; Debian's default persists to /var/lib/prometheus, the image's keeps
    # metrics in memory only: the entrypoint restores the image's default
    "quay.io/prometheus/pushgateway": Image(None, ("prometheus-pushgateway", "--persistence.file=")),
    "docker.io/library/haproxy": Image(None),  # Debian's haproxy (the chart sets the command)
}
IMAGE_PATHS = {"/app/": REPO, "/opt/airflow/dags": REPO / "dags"}  # where the images put this checkout
_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion (``$$`` escapes; an unknown variable stays as written)."""
    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _VAR.sub(one, text)


def _repository(image: str) -> str:
    base = image.split("@", 1)[0]
    return base.rsplit(":", 1)[0] if ":" in base.rsplit("/", 1)[-1] else base


@dataclass
class Pod:
    """One container of one replica of a workload, as it will be run."""

    name: str  # the process: the pod's name (zm-mlflow, demand-forecast-predictor), POD.CONTAINER in a pod of several
    kind: str  # Deployment, InferenceService
    labels: dict[str, str]
    image: str
    command: list[str]  # program and arguments, after $(VAR) expansion and the translations
    env: dict[str, str]  # the container's own environment (no host variables)
    ports: dict[str, int]  # port name -> container port
    readiness: dict[str, Any] | None
    mounts: dict[str, str] = field(default_factory=dict)  # mount path -> emptyDir or secret volume name
    ip: str = ""
    files: dict[str, str] = field(default_factory=dict)  # volume/file -> content (secret and configMap volumes)
    pod: str = ""  # the pod's name: its containers share its address and its working directory (set by pods())
    container: str = ""

    @property
    def program(self) -> str:
        """The executable: from the image's environment, else the machine's PATH."""
        image = IMAGES.get(_repository(self.image))
        if image is not None and image.bin is not None and (image.bin / self.command[0]).exists():
            return str(image.bin / self.command[0])
        found = shutil.which(self.command[0])
        if found is None:
            raise FileNotFoundError(f"{self.name}: {self.command[0]} is not installed (image {self.image})")
        return found


class Manifests:
    """The rendered documents of one release, with the Secrets the installer created beforehand."""

    def __init__(self, docs: list[dict[str, Any]], secrets: dict[str, dict[str, str]]) -> None:
        self.docs = docs
        self.secrets = secrets
        self.config_maps = {d["metadata"]["name"]: dict(d.get("data") or {}) for d in self.of("ConfigMap")}

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d.get("kind") == kind]

    # -------------------------------------------------------------- environment
    def _secret(self, name: str, key: str, optional: bool = False) -> str | None:
        value = self.secrets.get(name, {}).get(key)
        if value is None and not optional:
            raise KeyError(f"Secret {name} has no key {key}: the installer must create it (docs/install.md)")
        return value

    def env(self, container: dict[str, Any], ip: str, pod_name: str, namespace: str) -> dict[str, str]:
        """The container's environment, resolved in Kubernetes' order (envFrom, then env in order)."""
        out: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix", "")
            if "configMapRef" in source:
                data = self.config_maps.get(source["configMapRef"]["name"])
                if data is None:
                    raise KeyError(f"ConfigMap {source['configMapRef']['name']} is not in the release")
            else:
                data = self.secrets[source["secretRef"]["name"]]
            out.update({prefix + k: str(v) for k, v in data.items()})
        fields = {"status.podIP": ip, "metadata.name": pod_name, "metadata.namespace": namespace}
        for item in container.get("env") or []:
            if "value" in item:
                out[item["name"]] = expand(str(item["value"]), out)
                continue
            ref = item["valueFrom"]
            if "secretKeyRef" in ref:
                r = ref["secretKeyRef"]
                value = self._secret(r["name"], r["key"], bool(r.get("optional")))
            elif "configMapKeyRef" in ref:
                r = ref["configMapKeyRef"]
                value = self.config_maps.get(r["name"], {}).get(r["key"])
            else:
                value = fields[ref["fieldRef"]["fieldPath"]]
            if value is not None:
                out[item["name"]] = value
        return out

    # -------------------------------------------------------------- workloads
    def pods(self, namespace: str) -> list[Pod]:
        """Every container of one pod per Deployment and per InferenceService predictor (one replica each)."""
        found = []
        for d in self.of("Deployment"):
            spec = d["spec"]["template"]["spec"]
            found += self._containers(d["metadata"]["name"], "Deployment",
                                      d["spec"]["template"]["metadata"]["labels"], spec)
        for d in self.of("InferenceService"):
            predictor = d["spec"]["predictor"]
            labels = {**predictor.get("labels", {}), "serving.kserve.io/inferenceservice": d["metadata"]["name"],
                      "component": "predictor"}
            found += self._containers(f"{d['metadata']['name']}-predictor", "InferenceService", labels, predictor)
        return found

    def _containers(self, pod: str, kind: str, labels: dict[str, str], spec: dict[str, Any]) -> list[Pod]:
        containers = spec["containers"]
        return [self._pod(pod if len(containers) == 1 else f"{pod}.{c['name']}", pod, kind, labels, spec, c)
                for c in containers]

    def _volume_files(self, name: str, mount: str, volume: dict[str, Any]) -> dict[str, str]:
        """The files a ``secret`` or ``configMap`` volume projects: ``mount/path`` -> content."""
        if "secret" in volume:
            kind, source = "Secret", volume["secret"]
            data = self.secrets.get(source["secretName"])
            ref = source["secretName"]
        else:
            kind, source = "ConfigMap", volume["configMap"]
            data = self.config_maps.get(source["name"])
            ref = source["name"]
        if data is None:
            raise KeyError(f"{name}: {kind} {ref} does not exist")
        items = source.get("items") or [{"key": k, "path": k} for k in data]
        return {f"{mount}/{i['path']}": data[i["key"]] for i in items}

    def _pod(self, name: str, pod: str, kind: str, labels: dict[str, str], spec: dict[str, Any],
             container: dict[str, Any]) -> Pod:
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        mounts, files = {}, {}
        for m in container.get("volumeMounts") or []:
            volume = volumes.get(m["name"], {})
            if "secret" in volume or "configMap" in volume:
                files.update(self._volume_files(name, m["name"], volume))
            elif "emptyDir" not in volume:
                raise ValueError(f"{name}: volume {m['name']} is neither an emptyDir, a Secret nor a ConfigMap; "
                                 "the harness knows only those")
            mounts[m["mountPath"]] = m["name"]
        image = IMAGES.get(_repository(container["image"]))
        command = list(container.get("command") or (image.entrypoint if image else ()))
        if not command:
            raise ValueError(f"{name}: no command and no known entrypoint for {container['image']}")
        ports = {p.get("name", str(p["containerPort"])): int(p["containerPort"]) for p in container.get("ports", [])}
        return Pod(name, kind, dict(labels), container["image"], command + list(container.get("args") or []),
                   {}, ports, container.get("readinessProbe"), mounts, files=files, pod=pod,
                   container=container.get("name", ""))

    def container(self, pod: Pod) -> dict[str, Any]:
        for d in self.of("Deployment"):
            if d["metadata"]["name"] == pod.pod:
                spec = d["spec"]["template"]["spec"]
                return dict(next(c for c in spec["containers"] if c.get("name", "") == pod.container))
        for d in self.of("InferenceService"):
            if f"{d['metadata']['name']}-predictor" == pod.pod:
                return dict(next(c for c in d["spec"]["predictor"]["containers"]
                                 if c.get("name", "") == pod.container))
        raise KeyError(pod.name)

    def services(self) -> dict[str, tuple[dict[str, str], list[dict[str, Any]]]]:
        """Service name -> (selector, ports)."""
        return {d["metadata"]["name"]: (dict(d["spec"].get("selector") or {}), list(d["spec"].get("ports") or []))
                for d in self.of("Service")}

    def selects(self, selector: dict[str, str], pod: Pod) -> bool:
        return bool(selector) and all(pod.labels.get(k) == v for k, v in selector.items())


def translate(value: str, ip: str, mounts: dict[str, Path]) -> str:
    """The three translations of a manifest value: the pod's address, its volumes, the image's paths."""
    out = value.replace("0.0.0.0", ip).replace("127.0.0.1", ip)
    out = re.sub(r"(--[a-z.-]*listen-address=):", rf"\g<1>{ip}:", out)
    paths = {m.rstrip("/"): str(local) for m, local in mounts.items()}
    paths.update({p.rstrip("/"): str(local) for p, local in IMAGE_PATHS.items()})
    if not paths:
        return out
    # one pass, longest first: a path just substituted is never substituted again
    pattern = "|".join(re.escape(p) for p in sorted(paths, key=len, reverse=True))
    return re.sub(rf"(?<![\w/])({pattern})(?=/|$|\s|\")", lambda m: paths[m.group(1)], out)
