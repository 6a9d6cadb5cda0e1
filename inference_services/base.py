"""The shared base of the three KServe predictors.

Life cycle: ``load()`` resolves the registry alias (``production`` by default) to a version,
loads that version's estimator from MLflow once, builds the family's serving index and runs
a smoke prediction through the same code path as a request; only then is the model ready.
``refresh()`` (polled by the runtime) does the same for a new version behind the alias and
swaps it in with one assignment, so requests in flight finish on the version they started
with and none is dropped.

Versions: beside the alias's version, the versions behind ``serving.version_aliases`` (the previous
production and the staged candidate by default) are loaded the same way and answer on their
versioned paths (``/v2/models/NAME/versions/V/infer``, ``/v1/models/NAME/versions/V:predict``);
the runtime's middleware sets :data:`REQUESTED` for such a request, and :meth:`ServedModel.current`
picks the version.

Requests: V1 ``{"instances": [{...}, ...]}`` and V2 tensors are both turned into rows and
validated by one pydantic schema per family (unknown or missing fields, wrong types, out of
range values and NaN are refused with :class:`kserve.errors.InvalidInput`, a 400 whose
message names the field). Every answer names the model version (``model_version`` in the
body, ``x-model-version`` header); every prediction is appended to the request log.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import itertools
import math
import random
import time
import uuid
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import orjson
from cachetools import LRUCache
from kserve import InferOutput, InferRequest, InferResponse, Model
from kserve.errors import InvalidInput
from pydantic import BaseModel, ValidationError

from governance.pseudonyms import subject
from inference_services import metrics
from inference_services.batching import Batcher
from inference_services.request_log import EVENTS, SHADOW, RequestLog
from zmlops.settings import Settings
from zmlops.stores import object_store

__all__ = ["Loaded", "ServedModel", "TensorSpec", "Result", "JsonTensor", "JsonInfer", "REQUESTED"]

# The version a request asked for by its path (None: the alias's), set by the runtime's middleware per request.
REQUESTED: contextvars.ContextVar[str | None] = contextvars.ContextVar("zm_requested_version", default=None)
SHADOW_SLICE = 16  # rows of mirrored requests the shadow answers in one go, between production's requests
SHADOW_BACKOFF = 0.0005  # seconds the shadow waits while production answers
SHADOW_SEND_SECONDS = 0.01  # the copies a predictor sends to a shadow predictor go in one request this often

V2_TYPES: dict[str, tuple[str, ...]] = {
    "BYTES": ("BYTES",),
    "INT": ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"),
    "FP": ("FP16", "FP32", "FP64"),
}


@dataclass(frozen=True)
class TensorSpec:
    """One V2 tensor: name, datatype, shape (-1 = any) and, for inputs, the kind accepted."""

    name: str
    datatype: str
    shape: tuple[int, ...] = (-1,)
    accepts: str = ""  # BYTES, INT or FP (inputs)
    required: bool = False

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass
class Loaded:
    """Everything one model version needs to answer; swapped in whole on a version change."""

    version: str
    estimator: Any
    index: dict[str, Any] = field(default_factory=dict)


# Part of a request and who answers it: the version, the experiment and variant to log (or None), the rows' indices.
Part = tuple[Loaded, dict[str, str] | None, list[int]]


@dataclass
class Result:
    """One row's answer: its V1 body, its V2 values by output name, and log fields."""

    v1: dict[str, Any]
    v2: dict[str, Any]
    log: dict[str, Any]


@dataclass
class JsonTensor:
    """One V2 input tensor of a plain JSON request (what :meth:`ServedModel.rows_v2` reads)."""

    name: str
    shape: list[Any]
    datatype: str
    data: Any


@dataclass
class JsonInfer:
    """A plain JSON V2 request the middleware answers directly (no binary tensors, no parameters)."""

    inputs: list[JsonTensor]
    id: str | None
    outputs: list[str] | None  # requested output names, None for all

    TOP: ClassVar[frozenset[str]] = frozenset({"inputs", "id", "outputs"})
    INPUT: ClassVar[frozenset[str]] = frozenset({"name", "shape", "datatype", "data"})

    @classmethod
    def parse(cls, raw: Any) -> JsonInfer | None:
        """The request from its parsed JSON body, or None when it needs kserve's full decoder (parameters, odd
        shapes)."""
        if not isinstance(raw, dict) or not set(raw) <= cls.TOP or not isinstance(raw.get("inputs"), list):
            return None
        inputs = []
        for t in raw["inputs"]:
            if not isinstance(t, dict) or set(t) != cls.INPUT or not isinstance(t["name"], str) \
                    or not isinstance(t["datatype"], str) or not isinstance(t["shape"], list):
                return None
            inputs.append(JsonTensor(t["name"], t["shape"], t["datatype"], t["data"]))
        outputs = None
        if "outputs" in raw:
            if not isinstance(raw["outputs"], list):
                return None
            outputs = []
            for o in raw["outputs"]:
                params = o.get("parameters", {}) if isinstance(o, dict) else None
                if not isinstance(o, dict) or not isinstance(o.get("name"), str) \
                        or not set(o) <= {"name", "parameters"} or not isinstance(params, dict) \
                        or set(params) - {"binary_data"} or params.get("binary_data"):
                    return None
                outputs.append(o["name"])
        rid = raw.get("id")
        if rid is not None and not isinstance(rid, str):
            return None
        return cls(inputs, rid, outputs)


def _field_path(loc: Sequence[Any], row: int | None) -> str:
    inner = ".".join(str(p) for p in loc)
    return f"instances[{row}].{inner}" if row is not None else inner


def _reject(error: ValidationError, row: int | None) -> InvalidInput:
    first = error.errors()[0]
    where = _field_path(first["loc"], row)
    return InvalidInput(f"{where}: {first['msg']}")


class ServedModel(Model):  # type: ignore[misc]
    """Subclasses set ``family``, ``Row`` (pydantic schema), tensors, and implement the hooks."""

    family: ClassVar[str]
    Row: ClassVar[type[BaseModel]]
    inputs: ClassVar[tuple[TensorSpec, ...]]
    outputs: ClassVar[tuple[TensorSpec, ...]]
    cached: ClassVar[bool] = False  # per-row prediction cache (for keys that repeat)
    # the consent purpose an answer about a known customer needs (governance.consent): without it the customer
    # gets the answer an unknown one gets, and the log keeps nothing that identifies them
    consent_purpose: ClassVar[str | None] = None
    batched: ClassVar[bool] = False  # concurrent requests' rows answered in one call (inference_services.batching)

    def __init__(self, settings: Settings, alias: str = "production", version: str | None = None) -> None:
        super().__init__(self.family, return_response_headers=True)
        self.settings = settings
        self.alias = alias
        self.pinned = version
        self.state: Loaded | None = None
        self.others: dict[str, Loaded] = {}  # versions served by path only, by version
        self.experiment: dict[str, Any] | None = None  # the family's running A/B test (watch_experiment)
        self._unloadable: set[str] = set()  # of those, the ones whose loading failed (not retried every poll)
        self.cache: LRUCache[Hashable, Result] = LRUCache(maxsize=max(settings.serving.cache_size, 1))
        self.log = RequestLog(object_store(settings), self.family, settings.pseudonym_key.decode(),
                              settings.request_log)
        self.events = RequestLog(object_store(settings), self.family, settings.pseudonym_key.decode(),
                                 settings.request_log, prefix=EVENTS)  # outcome events (inference_services.events)
        self.shadow_log = RequestLog(object_store(settings), self.family,
                                     settings.pseudonym_key.decode(), settings.request_log,
                                     prefix=SHADOW)
        self.shadow_version: str | None = None  # the version behind serving.shadow_alias, when loaded
        self.shadow_remote = bool(settings.serving.shadow_url)  # copies go to a shadow predictor instead
        # the copies waiting: (rows, logged answers, version, seconds) for this process, JSON for a shadow predictor
        self._shadow_queue: asyncio.Queue[Any] | None = None
        self._shadow_task: asyncio.Task[None] | None = None  # held: the loop keeps only a weak reference
        self._shadow_rng = random.Random(0)
        self._answering = 0  # production requests between routing and their answer (the shadow waits for none)
        self._agree: Callable[[dict[str, Any], dict[str, Any]], float] | None = None  # the catalog's agreement
        self._shadow_warned = -60.0
        self.ready = False
        self.instrument = settings.serving.instrument
        self.use_cache = self.cached and settings.serving.cache_size > 0
        self.batcher: Batcher[Loaded, Result] | None = None
        self._consent: frozenset[str] | None = None  # pseudonyms: those who withdrew (or, opt-in, who granted)
        self._erased: frozenset[str] = frozenset()  # subject hashes of erased customers (governance.erasure)
        self._subject = functools.lru_cache(maxsize=65_536)(
            functools.partial(subject, settings.pseudonym_key))
        if self.batched and settings.serving.batching:
            rows_hist = metrics.child(metrics.BATCH_ROWS, self.family)
            self.batcher = Batcher(self._answer_now, settings.serving.max_batch,
                                   rows_hist.observe if self.instrument else None, settings.serving.batch_wait_turns)
        self._boot, self._ids = uuid.uuid4().hex[:12], itertools.count(1)  # request ids unique per process
        metrics.READY.labels(self.family).set(0)

    # ------------------------------------------------------------ hooks for subclasses
    def build_index(self, estimator: Any) -> dict[str, Any]:
        """Precompute what answering needs (lookup tables); runs once per version."""
        return {}

    def smoke_rows(self, state: Loaded) -> Sequence[BaseModel]:
        raise NotImplementedError

    def check(self, state: Loaded, rows: list[BaseModel]) -> None:
        """Checks that need the loaded version (known categories); raise InvalidInput naming the row."""

    def warm(self, state: Loaded) -> None:
        """Open connections (online store) before readiness; failures here only degrade answers."""

    def watch_inputs(self) -> None:
        """Run from the poll loop, off the event loop: notice changed inputs (features materialized again)."""

    def cache_key(self, row: BaseModel) -> Hashable:
        return tuple(row.model_dump().values())

    async def answer(self, state: Loaded, rows: list[BaseModel]) -> list[Result]:
        raise NotImplementedError

    def observe(self, state: Loaded, results: list[Result]) -> None:
        """Prediction-distribution metrics."""

    # ------------------------------------------------------------ loading
    def _resolve(self) -> str:
        if self.pinned:
            return self.pinned
        from training import tracking

        version = tracking.alias_version(self.settings, self.family, self.alias)
        if version is None:
            raise RuntimeError(f"no version of {self.family} has the alias {self.alias!r}")
        return version

    def _load_version(self, version: str) -> Loaded:
        from training import tracking

        if self._consent is None:  # before the first answer: nobody is answered against their choice
            self.watch_consent()

        estimator = tracking.load_estimator(self.settings, self.family, version)
        state = Loaded(version, estimator, self.build_index(estimator))
        self._smoke(state)
        self.warm(state)
        return state

    def _smoke(self, state: Loaded) -> None:
        import asyncio

        rows = list(self.smoke_rows(state))
        results = asyncio.run(self.answer(state, rows)) if rows else []
        if len(results) != len(rows):
            raise RuntimeError(f"smoke prediction returned {len(results)} answers for {len(rows)} rows")

    def _activate(self, state: Loaded) -> None:
        old = self.state
        self.state = state  # one assignment: requests read self.state once
        self.cache.clear()
        if old is not None:
            metrics.MODEL_VERSION.labels(self.family, old.version, self.alias).set(0)
        metrics.MODEL_VERSION.labels(self.family, state.version, self.alias).set(1)
        self.ready = True
        metrics.READY.labels(self.family).set(1)

    def load(self) -> bool:
        self._activate(self._load_version(self._resolve()))
        return self.ready

    def current(self) -> Loaded | None:
        """The version this request asked for (:data:`REQUESTED`), else the alias's."""
        wanted = REQUESTED.get()
        state = self.state
        if wanted is None or (state is not None and state.version == wanted):
            return state
        return self.others.get(wanted)

    def served_versions(self) -> list[str]:
        """Every version answering here: the alias's first, then the others, newest first."""
        state = self.state
        first = [state.version] if state is not None else []
        return first + sorted((v for v in self.others if v not in first), key=lambda v: (len(v), v), reverse=True)

    def refresh_others(self) -> list[str]:
        """Load the versions behind ``serving.version_aliases`` that are not the alias's, and drop the ones no
        alias names any more (the poll loop, off the event loop); returns the versions loaded. A pinned server
        (a canary's) serves its one version only."""
        if self.pinned or self.state is None:
            return []
        from training import tracking

        wanted = {v for alias in self.settings.serving.version_aliases if alias != self.alias
                  and (v := tracking.alias_version(self.settings, self.family, alias)) is not None}
        if self.experiment is not None:  # a running experiment's variants
            wanted |= {str(v) for v in self.experiment["variants"].values()}
        shadow = self.settings.serving.shadow_alias
        shadow_version = tracking.alias_version(self.settings, self.family, shadow) if shadow else None
        if shadow_version is not None:
            wanted.add(shadow_version)
        wanted.discard(self.state.version)
        kept = {v: s for v, s in self.others.items() if v in wanted}
        self._unloadable &= wanted  # a version that failed is tried again once an alias names it again
        loaded, failures = [], []
        for version in sorted(wanted - set(kept) - self._unloadable):
            try:
                kept[version] = self._load_version(version)
                loaded.append(version)
            except Exception as error:  # noqa: BLE001 - one bad version keeps neither the others nor the alias's
                self._unloadable.add(version)
                failures.append(f"v{version}: {type(error).__name__}: {error}")
        self.others = kept  # one assignment: a request reads the mapping once
        self.shadow_version = shadow_version if shadow_version in kept else None
        if failures:
            raise RuntimeError("; ".join(failures))
        return loaded

    def watch_consent(self) -> None:
        """Re-read the consent register for this family's purpose and the erasure register (the poll loop); a
        change drops the cache."""
        if self.consent_purpose is None:
            return
        from governance import consent
        from governance.erasure import erased_subjects

        purpose = self.consent_purpose
        read = consent.granted if self.settings.privacy.consent_required else consent.withdrawn
        found = read(self.settings, purpose)  # type: ignore[arg-type]
        erased = erased_subjects(self.settings)
        if found != self._consent or erased != self._erased:
            self._consent, self._erased = found, erased
            self.cache.clear()

    # ------------------------------------------------------------ shadow traffic
    def agreement(self, production: dict[str, Any], shadow: dict[str, Any]) -> float:
        """How far the shadow's answer to one row agrees with production's, 0..1, from the two logged rows (the
        family's catalog ``agreement``: :mod:`monitoring.agreement`)."""
        if self._agree is None:
            from zmlops import catalog

            self._agree = catalog.load(catalog.entry(self.family).agreement)
        return float(self._agree(production, shadow))

    def _mirror(self, rows: list[BaseModel], results: list[Result], version: str, started: float) -> None:
        """Queue a copy of an answered request for the shadow; a full queue drops it (counted)."""
        cfg = self.settings.serving
        if cfg.shadow_share < 1.0 and self._shadow_rng.random() >= cfg.shadow_share:
            return
        if self._shadow_queue is None:
            self._shadow_queue = asyncio.Queue(maxsize=cfg.shadow_queue)
            worker = self._shadow_sender() if cfg.shadow_url else self._shadow_worker()
            self._shadow_task = asyncio.get_running_loop().create_task(worker, name=f"{self.family}-shadow")
        took = time.perf_counter() - started
        logs = [r.log for r in results]
        try:  # for a shadow predictor, serialised now: a little work per request rather than a burst per send
            self._shadow_queue.put_nowait(orjson.dumps(
                {"version": version, "instances": [r.model_dump() for r in rows], "answers": logs,
                 "latency_ms": round(took * 1000, 3)}, option=orjson.OPT_SERIALIZE_NUMPY)
                if self.shadow_remote else (rows, logs, version, took))
        except asyncio.QueueFull:
            metrics.child(metrics.SHADOW, self.family, str(self.shadow_version or "remote"), "dropped").inc()

    async def _shadow_worker(self) -> None:
        """Answers the mirrored requests with the shadow version loaded here, in the gaps between production's
        requests. Production comes first: the worker starts a slice only when no production request is being
        answered, and a slice is short (the copies waiting, up to ``SHADOW_SLICE`` rows, answered in one call as
        production's batcher would), so a production request that arrives meanwhile waits for at most one slice."""
        queue = self._shadow_queue
        assert queue is not None
        while True:
            copies = [await queue.get()]
            rows = len(copies[0][0])
            while rows < SHADOW_SLICE and not queue.empty():
                copies.append(queue.get_nowait())
                rows += len(copies[-1][0])
            while self._answering:
                await asyncio.sleep(SHADOW_BACKOFF)
            shadow = self.others.get(self.shadow_version or "")
            if shadow is not None:
                await self.compare(shadow, copies)
            await asyncio.sleep(0)  # production's requests that arrived meanwhile go first

    async def _shadow_sender(self) -> None:
        """Sends the copies to the shadow predictor (``serving.shadow_url``, another predictor of this family
        serving the candidate) in one request every ``SHADOW_SEND_SECONDS``: production's process only serialises
        and sends them, the shadow's answers and comparisons are made and recorded there
        (``POST /v1/models/NAME/shadow``). A copy that cannot be sent is dropped and counted, never retried. The
        client is aiohttp's: a send holds production's event loop about a quarter as long as httpx's
        (``python -m benchmarks.probe_shadow_send``)."""
        import aiohttp

        queue = self._shadow_queue
        assert queue is not None
        cfg = self.settings.serving
        from zmlops import auth

        url = f"{cfg.shadow_url.rstrip('/')}/v1/models/{self.family}/shadow"
        headers = {**auth.headers(self.settings), "content-type": "application/json"}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10), headers=headers) as client:
            while True:
                copies = [await queue.get()]
                await asyncio.sleep(SHADOW_SEND_SECONDS)
                while not queue.empty():
                    copies.append(queue.get_nowait())
                body = b'{"copies":[' + b",".join(copies) + b"]}"
                try:
                    async with client.post(url, data=body) as sent:
                        failed = None if sent.status == 200 else f"HTTP {sent.status}: {(await sent.text())[:200]}"
                except (aiohttp.ClientError, TimeoutError) as error:
                    failed = f"{type(error).__name__}: {error}"
                if failed:
                    metrics.child(metrics.SHADOW, self.family, "remote", "dropped").inc(len(copies))
                    self._log_shadow_failure(url, failed)

    def _log_shadow_failure(self, url: str, why: str) -> None:
        """At most one warning a minute: a shadow predictor that is down must not flood production's log."""
        import logging

        now = time.monotonic()
        if now - self._shadow_warned >= 60:
            self._shadow_warned = now
            logging.getLogger("zmlops.serving").warning("%s: shadow copies not sent to %s: %s (dropped, counted)",
                                                        self.family, url, why)

    async def compare(self, shadow: Loaded,
                      copies: Sequence[tuple[list[BaseModel], list[dict[str, Any]], str, float]]) -> dict[str, int]:
        """Answer copies of production's requests with ``shadow`` (their rows in calls of at most
        ``serving.max_batch``) and record each comparison with production's logged answers: the shadow log and
        ``zm_shadow_*``. Each copy's shadow latency is the time of the call that answered it. Returns the count
        of copies per result (agree, differ, error)."""
        rows = [row for copy in copies for row in copy[0]]
        answers: list[Result] = []
        spent: list[float] = []
        error = None
        most = self.settings.serving.max_batch
        for at in range(0, len(rows), most):
            began = time.perf_counter()
            try:
                answers += await self.answer(shadow, rows[at:at + most])
            except Exception as exc:  # noqa: BLE001 - a failing shadow is a finding, never production's problem
                error = f"{type(exc).__name__}: {exc}"[:300]
                break
            spent += [time.perf_counter() - began] * len(rows[at:at + most])
        counts = {"agree": 0, "differ": 0, "error": 0}
        at = 0
        for mirrored, logs, version, took in copies:
            theirs, at = answers[at:at + len(mirrored)], at + len(mirrored)
            failed = error is not None and len(theirs) < len(mirrored)
            agree = 0.0 if failed else sum(self.agreement(a, b.log) for a, b in zip(logs, theirs, strict=True)
                                           ) / max(len(mirrored), 1)
            result = "error" if failed else ("agree" if agree >= 1.0 else "differ")
            counts[result] += 1
            took_shadow = spent[at - 1] if not failed and mirrored else 0.0
            metrics.child(metrics.SHADOW, self.family, shadow.version, result).inc()
            if not failed:
                metrics.child(metrics.SHADOW_AGREEMENT, self.family, shadow.version).observe(agree)
                metrics.child(metrics.SHADOW_LATENCY, self.family, shadow.version).observe(took_shadow)
            self.shadow_log.append({"model": self.family, "version": version, "shadow": shadow.version,
                                    "row_count": len(mirrored), "agreement": round(agree, 4),
                                    "error": error if failed else None, "latency_ms": round(took * 1000, 3),
                                    "shadow_latency_ms": round(took_shadow * 1000, 3)})
        return counts

    def watch_experiment(self) -> None:
        """Re-read the family's running experiment (the poll loop); its variants' versions load with the others."""
        from delivery.experiments import running

        self.experiment = None if self.pinned else running(self.settings, self.family)

    def personal(self, customer_id: Any) -> bool:
        """May this customer get an answer about them (their consent for ``consent_purpose``)?"""
        if self.consent_purpose is None:
            return True
        if self._erased and self._subject(int(customer_id)) in self._erased:  # erased: a stranger from now on
            return False
        opt_in = self.settings.privacy.consent_required
        if not self._consent:  # nobody withdrew (opt-out) or nobody granted (opt-in): no hash needed
            return not opt_in
        named = self.log.pseudonymise(customer_id) in self._consent
        return named if opt_in else not named

    def refresh(self) -> str | None:
        """Load and swap in the version behind the alias if it changed; returns the new version."""
        version = self._resolve()
        if self.state is not None and version == self.state.version:
            return None
        self._activate(self._load_version(version))
        return version

    def stop(self) -> None:
        self.ready = False
        metrics.READY.labels(self.family).set(0)
        self.log.close()
        self.events.close()
        self.shadow_log.close()

    # ------------------------------------------------------------ metadata
    def get_input_types(self) -> list[dict[str, Any]]:
        return [t.metadata() for t in self.inputs]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [t.metadata() for t in self.outputs]

    # ------------------------------------------------------------ parsing
    def _validate_row(self, raw: Any, row: int | None) -> BaseModel:
        if not isinstance(raw, dict):
            raise InvalidInput(f"instances[{row}]: expected an object with fields {sorted(self.Row.model_fields)}")
        try:
            return self.Row.model_validate(raw)
        except ValidationError as error:
            raise _reject(error, row) from None

    def _limit(self, n: int, what: str) -> None:
        if n == 0:
            raise InvalidInput(f"{what}: at least one row is needed")
        if n > self.settings.serving.max_batch:
            raise InvalidInput(f"{what}: at most {self.settings.serving.max_batch} rows per request, got {n}")

    def rows_v1(self, payload: Any) -> list[BaseModel]:
        if isinstance(payload, bytes | str):  # sent without a JSON content type: kserve left it undecoded
            try:
                payload = orjson.loads(payload)
            except orjson.JSONDecodeError as error:
                raise InvalidInput(f"body: not valid JSON ({error})") from None
        if not isinstance(payload, dict):
            raise InvalidInput("body: expected a JSON object with an 'instances' list")
        extra = sorted(set(payload) - {"instances", "parameters"})
        if extra:
            raise InvalidInput(f"{extra[0]}: unknown field; the body holds 'instances'")
        instances = payload.get("instances")
        if not isinstance(instances, list):
            raise InvalidInput("instances: expected a list of objects")
        self._limit(len(instances), "instances")
        return [self._validate_row(raw, i) for i, raw in enumerate(instances)]

    def rows_v2(self, request: InferRequest | JsonInfer) -> list[BaseModel]:
        specs = {t.name: t for t in self.inputs}
        columns: dict[str, list[Any]] = {}
        n: int | None = None
        for tensor in request.inputs:
            spec = specs.get(tensor.name)
            if spec is None:
                raise InvalidInput(f"inputs.{tensor.name}: unknown input; expected {sorted(specs)}")
            if tensor.name in columns:
                raise InvalidInput(f"inputs.{tensor.name}: given twice")
            if tensor.datatype not in V2_TYPES[spec.accepts]:
                raise InvalidInput(f"inputs.{tensor.name}: datatype {tensor.datatype} where {spec.accepts} is expected")
            values = tensor.data
            if hasattr(values, "tolist"):
                values = values.tolist()
            if not isinstance(values, list) or any(isinstance(v, list) for v in values):
                raise InvalidInput(f"inputs.{tensor.name}: expected a flat list of values")
            shape = list(tensor.shape)
            if not shape or any(not isinstance(s, int) or s < 0 for s in shape) or math.prod(shape) != len(values):
                raise InvalidInput(f"inputs.{tensor.name}: shape {shape} does not match {len(values)} values")
            if spec.accepts == "BYTES":
                values = [v.decode() if isinstance(v, bytes) else v for v in values]
            if len(values) == 1 and spec.name in self.broadcast_inputs():
                columns[tensor.name] = values  # broadcast over the rows below
                continue
            if n is not None and len(values) != n:
                raise InvalidInput(f"inputs.{tensor.name}: {len(values)} values where other inputs have {n}")
            n = len(values)
            columns[tensor.name] = values
        if n is None:
            n = max((len(v) for v in columns.values()), default=0)
        self._limit(n, "inputs")
        raws = [{k: (v[0] if len(v) == 1 else v[i]) for k, v in columns.items()} for i in range(n)]
        return [self._validate_row(raw, i) for i, raw in enumerate(raws)]

    def broadcast_inputs(self) -> set[str]:
        """Inputs that may be given once for every row (e.g. ``k``)."""
        return set()

    # ------------------------------------------------------------ answering
    async def __call__(
        self, body: Any, headers: dict[str, str] | None = None, verb: Any = None
    ) -> tuple[Any, dict[str, str]]:
        """kserve's call chain without the parts we do not use on the hot path.

        We have no preprocess/postprocess and validate in :meth:`predict`, so only kserve's
        own predict-latency histogram is kept (our finer one is in the middleware).
        """
        from kserve.metrics import PREDICT_HIST_TIME
        from kserve.model import InferenceVerb

        if verb not in (None, InferenceVerb.PREDICT):
            return await super().__call__(body, headers, verb)  # type: ignore[no-any-return]
        response_headers: dict[str, str] = {}
        with metrics.child(PREDICT_HIST_TIME, self.family).time():
            response = await self.predict(body, headers, response_headers)
        return response, response_headers

    async def _answer_now(self, state: Loaded, rows: list[BaseModel]) -> list[Result]:
        return await self.answer(state, rows)  # looked up per call: the benchmark's constant replaces it

    async def _compute(self, state: Loaded, rows: list[BaseModel]) -> list[Result]:
        if self.batcher is not None:
            return await self.batcher.submit(state, rows)
        return await self.answer(state, rows)

    async def _answer_cached(self, state: Loaded, rows: list[BaseModel]) -> tuple[list[Result], int]:
        if not self.use_cache:
            return await self._compute(state, rows), 0
        keys = [(state.version, self.cache_key(r)) for r in rows]
        found: list[Result | None] = [self.cache.get(k) for k in keys]
        missing = [i for i, f in enumerate(found) if f is None]
        hits = len(rows) - len(missing)
        if hits and self.instrument:
            metrics.child(metrics.CACHE, self.family, "hit").inc(hits)
        if missing and self.instrument:
            metrics.child(metrics.CACHE, self.family, "miss").inc(len(missing))
        if missing:
            fresh = await self._compute(state, [rows[i] for i in missing])
            for i, result in zip(missing, fresh, strict=True):
                found[i] = result
                self.cache[keys[i]] = result
        return [f for f in found if f is not None], hits

    async def predict(
        self,
        payload: dict[str, Any] | InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict[str, Any] | InferResponse:
        started = time.perf_counter()
        state = self._serving_state()
        v2 = isinstance(payload, InferRequest)
        asked = payload.request_outputs if isinstance(payload, InferRequest) else None
        specs = self._output_specs([o.name for o in asked] if asked else None)
        rows = self.rows_v2(payload) if v2 else self.rows_v1(payload)
        request_id = (headers or {}).get("x-request-id") or (
            payload.id if isinstance(payload, InferRequest) and payload.id else None
        )
        results, request_id, version = await self.serve(state, rows, "v2" if v2 else "v1", request_id, started,
                                                         response_headers)
        if v2:
            return self._v2_response(specs, version, results, request_id)
        return {"predictions": [r.v1 for r in results], "model_name": self.family, "model_version": version}

    def _serving_state(self) -> Loaded:
        state = self.current()
        if state is None:  # kserve answers 503 before this for not-ready; a version may go between route and call
            raise InvalidInput(f"{self.family} version {REQUESTED.get() or self.alias}: not served here")
        return state

    async def predict_json(self, payload: dict[str, Any], request_id: str | None,
                           response_headers: dict[str, str]) -> dict[str, Any]:
        """A V1 request already parsed by the middleware (same checks and answer as :meth:`predict`)."""
        started = time.perf_counter()
        state = self._serving_state()
        rows = self.rows_v1(payload)
        results, _, version = await self.serve(state, rows, "v1", request_id, started, response_headers)
        return {"predictions": [r.v1 for r in results], "model_name": self.family, "model_version": version}

    async def infer_json(self, request: JsonInfer, request_id: str | None,
                         response_headers: dict[str, str]) -> dict[str, Any]:
        """A plain JSON V2 request, answered as JSON without kserve's InferRequest/InferResponse and numpy
        round trips (the middleware calls this; anything else goes through :meth:`predict`)."""
        started = time.perf_counter()
        state = self._serving_state()
        specs = self._output_specs(request.outputs)
        rows = self.rows_v2(request)
        results, request_id, version = await self.serve(state, rows, "v2", request_id or request.id,
                                                         started, response_headers)
        outputs = []
        for spec in specs:
            shape, values = self._v2_values(spec, results)
            cast = _JSON_CAST[spec.datatype]
            outputs.append({"name": spec.name, "shape": shape, "datatype": spec.datatype,
                            "data": [cast(v) for v in values]})
        return {"id": request_id, "model_name": self.family, "model_version": version, "outputs": outputs}

    def _variants(self, state: Loaded, rows: list[BaseModel]) -> list[Part]:
        """Who answers which rows: during a running experiment, a request on the unversioned path naming customers
        goes to each customer's variant (sticky by pseudonym, :func:`delivery.experiments.assign`); a request
        naming customers of both variants is answered in two parts, each by its variant's version. Anything else
        (no experiment, a version asked for, rows without a customer, a variant's version not loaded yet) goes to
        ``state`` whole and is not counted (the sample-ratio check would see a bias). Each part: the version, the
        experiment and variant to log, the rows' indices."""
        experiment = self.experiment
        whole: list[Part] = [(state, None, list(range(len(rows))))]
        if experiment is None or not rows or REQUESTED.get() is not None:
            return whole
        customers = [getattr(row, "customer_id", None) for row in rows]
        if None in customers:
            return whole
        from delivery.experiments import assign

        split, name, variants = experiment["split"], experiment["name"], experiment["variants"]
        indices: dict[str, list[int]] = {variant: [] for variant in variants}
        for i, customer in enumerate(customers):
            indices[assign(name, self.log.pseudonymise(customer), split)].append(i)
        parts: list[Part] = []
        for variant, rows_of in indices.items():
            if not rows_of:
                continue
            version = str(variants[variant])
            chosen = state if version == state.version else self.others.get(version)
            if chosen is None:
                return whole
            parts.append((chosen, {"experiment": name, "variant": variant}, rows_of))
        if len(parts) == 1:  # the middleware counts the request under the version that answers it
            REQUESTED.set(parts[0][0].version)
        return parts

    async def serve(self, state: Loaded, rows: list[BaseModel], protocol: str, request_id: str | None,
                     started: float, response_headers: dict[str, str] | None) -> tuple[list[Result], str, str]:
        """Route (:meth:`_variants`), check, answer (through the cache), count, log: the part both protocols share.
        Returns the results, the request id and the version that answered (two, comma-separated, when an
        experiment's variants answered parts of the request)."""
        parts = self._variants(state, rows)
        request_id = request_id or f"{self._boot}-{next(self._ids):x}"
        self._answering += 1  # the in-process shadow waits while any request is between here and its answer
        try:
            if len(parts) == 1:
                state, routed, _ = parts[0]
                self.check(state, rows)
                results = await self._answer_part(state, rows, protocol, request_id, started, routed)
                shadowing = self.shadow_version is not None or self.shadow_remote
                if shadowing and routed is None and REQUESTED.get() is None:
                    self._mirror(rows, results, state.version, started)
                version = state.version
            else:
                chunks = [[rows[i] for i in part[2]] for part in parts]
                for (chosen, _, _), chunk in zip(parts, chunks, strict=True):
                    self.check(chosen, chunk)  # every part checked before any is answered or logged
                placed: list[Result | None] = [None] * len(rows)
                for (chosen, routed, where), chunk in zip(parts, chunks, strict=True):
                    answered = await self._answer_part(chosen, chunk, protocol, request_id, started, routed)
                    for i, result in zip(where, answered, strict=True):
                        placed[i] = result
                results = [r for r in placed if r is not None]
                version = ",".join(chosen.version for chosen, _, _ in parts)
        finally:
            self._answering -= 1
        if response_headers is not None:
            response_headers["x-model-version"] = version
        return results, request_id, version

    async def _answer_part(self, state: Loaded, rows: list[BaseModel], protocol: str, request_id: str,
                           started: float, routed: dict[str, str] | None) -> list[Result]:
        """Answer ``rows`` with ``state`` (through the cache), count them and log them as one record."""
        results, hits = await self._answer_cached(state, rows)
        if self.instrument:
            self.observe(state, results)
            metrics.child(metrics.ROWS, self.family, state.version).inc(len(rows))
        self.log.append(
            {
                "request_id": self.log.request_id(request_id),
                "model": self.family,
                "version": state.version,
                "protocol": protocol,
                "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                "cache_hits": hits,
                "rows": [r.log for r in results],
                **(routed or {}),
            }
        )
        return results

    @staticmethod
    def _v2_values(spec: TensorSpec, results: list[Result]) -> tuple[list[int], list[Any]]:
        """One output tensor's shape and flat values (rows padded to the longest with "" or 0)."""
        per_row = [_as_list(r.v2[spec.name]) for r in results]
        if len(spec.shape) > 1:
            width = max((len(v) for v in per_row), default=0)
            pad: Any = "" if spec.datatype == "BYTES" else 0
            per_row = [v + [pad] * (width - len(v)) for v in per_row]
            values = [v for row in per_row for v in row]
            return [len(results), width], values
        values = [v for row in per_row for v in row]
        return [len(values)], values

    def _output_specs(self, wanted: list[str] | None) -> list[TensorSpec]:
        """The output tensors a V2 request asked for (all when it named none); an unknown name is a 400."""
        known = {spec.name for spec in self.outputs}
        if wanted is not None and set(wanted) - known:
            raise InvalidInput(f"outputs: unknown output {sorted(set(wanted) - known)}; expected {sorted(known)}")
        return [spec for spec in self.outputs if wanted is None or spec.name in wanted]

    def _v2_response(self, specs: list[TensorSpec], version: str, results: list[Result], rid: str) -> InferResponse:
        outputs = []
        for spec in specs:
            shape, values = self._v2_values(spec, results)
            data = _tensor(values, spec.datatype).reshape(shape)  # kserve converts through numpy anyway
            outputs.append(InferOutput(spec.name, shape, spec.datatype, data))
        return InferResponse(rid, self.family, outputs, model_version=version)


_JSON_CAST: dict[str, Callable[[Any], Any]] = {
    "BYTES": lambda v: v.decode() if isinstance(v, bytes) else str(v),
    "BOOL": bool,
    "INT32": int,
    "INT64": int,
    "FP32": float,
    "FP64": float,
}


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple | np.ndarray) else [value]


def _tensor(values: list[Any], datatype: str) -> np.ndarray:
    conv: dict[str, Callable[[list[Any]], np.ndarray]] = {
        "BYTES": lambda v: np.array(v, dtype=object),
        "BOOL": lambda v: np.array(v, dtype=bool),
        "INT32": lambda v: np.array(v, dtype=np.int32),
        "INT64": lambda v: np.array(v, dtype=np.int64),
        "FP32": lambda v: np.array(v, dtype=np.float32),
        "FP64": lambda v: np.array(v, dtype=np.float64),
    }
    return conv[datatype](values)
