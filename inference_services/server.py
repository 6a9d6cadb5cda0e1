"""Run one model family as a KServe ModelServer process (``zm-serve``), or every one (``make serve``).

kserve's ``ModelServer.start`` only starts listening once a model is ready and binds
0.0.0.0. This runtime uses kserve's own data plane, REST endpoints and error handlers (its public
``ModelServer`` and ``RESTServer.create_application``) on uvicorn's server, but:

- binds the host from settings (127.0.0.1 in the local profile);
- starts listening at once and loads the model in the background, so readiness is
  observable (``/v2/models/<name>/ready`` is false until the model loaded and passed its
  smoke prediction; it stays false if the artifact is corrupt, and loading is retried);
- polls the registry alias and swaps in a new version without dropping requests, and on the
  same beat asks the model whether its inputs changed (segmentation drops its feature cache
  when its feature view was materialized again);
- replaces kserve's per-request timing logs with Prometheus metrics and a request-size limit;
- on SIGTERM turns readiness false (the readiness endpoints answer 503) while it keeps answering
  predictions, waits ``serving.drain_seconds`` for load balancers to notice, then lets uvicorn
  finish the requests in flight and exit.

One process serves one model with one worker (kserve's multi-worker mode restarts
slow-importing workers forever); scale is by replicas.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from inference_services.binary import HEADER, binary_request_error
from zmlops import auth, catalog

if TYPE_CHECKING:
    from inference_services.base import ServedModel
    from zmlops.auth import Key
    from zmlops.settings import Settings

__all__ = ["SERVICES", "KSERVE_CHECKED", "service_class", "main", "serve_all"]

SERVICES = {name: entry.service for name, entry in catalog.ENTRIES.items()}  # family -> module:class
# The kserve release whose V1 and V2 answers the edge's direct JSON path was last compared with, request by request
# (tests/serving/test_kserve_contract.py, which fails on any other release until it is run again and this moves).
KSERVE_CHECKED = "0.21.0"
log = logging.getLogger("zmlops.serving")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]


def service_class(family: str) -> type[ServedModel]:
    if family not in SERVICES:
        raise KeyError(f"unknown model {family!r}; choose from {', '.join(SERVICES)}")
    cls: type[ServedModel] = catalog.load(SERVICES[family])
    if cls.family != family:
        raise TypeError(f"{SERVICES[family]} serves {cls.family!r}, not {family!r}")
    return cls


VERSIONED = re.compile(r"^/v2/models/([^/]+)/versions/([^/]+)(/.*)?$")
VERSIONED_V1 = re.compile(r"^/v1/models/([^/:]+)/versions/([^/:]+)(:predict)?$")
V1_READY = re.compile(r"^/v1/models/[^/:]+(/versions/[^/:]+)?$")  # V1's model readiness, a version's too
# Routes the edge answers itself or rewrites for kserve (the route inventory test calls them with kserve's own).
EDGE_ROUTES = (("POST", "/v1/models/{model_name}/events"),
               ("POST", "/v1/models/{model_name}/shadow"),
               ("POST", "/v1/models/{model_name}/versions/{model_version}:predict"),
               ("GET", "/v1/models/{model_name}/versions/{model_version}"),
               ("POST", "/v2/models/{model_name}/versions/{model_version}/infer"),
               ("GET", "/v2/models/{model_name}/versions/{model_version}/ready"))


class Edge:
    """ASGI middleware in front of kserve: the inference edge.

    Request-size limit and a body read timeout (slow or half-sent bodies get 408 and lose the connection);
    the binary tensor extension checked before kserve decodes it; ``/v2/models/NAME/versions/V/...`` (and V1's
    ``/v1/models/NAME/versions/V:predict``) answered by that version where it is served here and 404 for any
    other; the model's metadata lists the versions served; the model repository API off unless settings turn it on;
    every error in one shape, ``{"error": "..."}`` (FastAPI's 422 becomes a 400 naming the field, and a 5xx
    body never carries exception text: that goes to the log); request counter and latency by status.
    """

    def __init__(self, app: ASGIApp, model: ServedModel, max_body: int, instrument: bool = True,
                 body_timeout: float = 10.0, repository_api: bool = False, keys: dict[str, Key] | None = None,
                 direct: bool = True) -> None:
        self.app = app
        self.keys = keys  # by sha256; None: no authentication (only when settings turn it off)
        self._known: dict[tuple[bytes | None, str], tuple[int, str] | None] = {}  # (header, scope) -> answer
        self.model = model
        self.max_body = max_body
        self.body_timeout = body_timeout
        self.repository_api = repository_api
        self.instrument = instrument
        self.direct = direct  # plain JSON answered here (the contract test turns it off to compare with kserve)
        self._meters: dict[tuple[str, str, int], tuple[Any, Any]] = {}  # (version, protocol, status) -> children
        self.draining = False  # set on SIGTERM: readiness answers 503, predictions are still served
        self.v2_path = f"/v2/models/{model.family}/infer"
        self.metadata_path = f"/v2/models/{model.family}"
        self.events_path = f"/v1/models/{model.family}/events"
        self.shadow_path = f"/v1/models/{model.family}/shadow"
        self.v1_path = f"/v1/models/{model.family}:predict"

    @staticmethod
    def _readiness(path: str) -> bool:
        return path == "/v2/health/ready" or (path.startswith("/v2/models/") and path.endswith("/ready")) \
            or V1_READY.match(path) is not None

    @staticmethod
    def _protocol(path: str) -> str | None:
        if path.startswith("/v1/models/") and path.endswith(":predict"):
            return "v1"
        if path.startswith("/v2/models/") and path.endswith("/infer"):
            return "v2"
        return None

    @staticmethod
    def scope_of(path: str) -> str | None:
        """The scope a route needs: None for health and readiness probes (no key), else predict, metrics or
        admin."""
        if path in ("/", "/v2/health/live", "/v2/health/ready") or Edge._readiness(path):
            return None
        if path == "/metrics":
            return "metrics"
        return "admin" if path.startswith("/v2/repository") else "predict"

    def _refused(self, scope: Scope, path: str) -> tuple[int, str] | None:
        """401 without a known key, 403 without the route's scope; None when the request may pass."""
        needed = self.scope_of(path)
        if self.keys is None or needed is None:
            return None
        given = next((v for k, v in scope.get("headers", ()) if k == b"authorization"), None)
        asked = (given, needed)
        if asked not in self._known:  # the answer to this header and scope, computed once
            if len(self._known) > 10_000:
                self._known.clear()
            self._known[asked] = auth.allowed(self.keys, given.decode("latin-1") if given is not None else None,
                                              needed)
        return self._known[asked]

    def _unserved(self, name: str, version: str) -> tuple[int, str] | None:
        served = self.model.served_versions()
        if name == self.model.family and version not in served:
            return 404, (f"model {name} version {version}: not served here (this server serves "
                         f"{'versions ' + ', '.join(served) if served else 'no version yet'})")
        return None

    def _route(self, path: str, query: bytes = b"") -> tuple[str, bytes, tuple[int, str] | None, str | None]:
        """The path and query kserve serves (a versioned path or ``?model_version=`` of a served version: the
        unversioned one) and the version asked for, or the answer to give instead."""
        asked = None
        if path.startswith(("/v2/models/", "/v1/models/")) and "/versions/" in path:
            found = VERSIONED.match(path) or VERSIONED_V1.match(path)
            if found:
                name, version, rest = found.groups()
                if unserved := self._unserved(name, version):
                    return path, query, unserved, None
                path, asked = f"/{path[1:3]}/models/{name}{rest or ''}", version
        if b"model_version" in query and path.startswith("/v2/models/"):  # kserve answers 501 to any version
            from urllib.parse import parse_qsl, urlencode

            pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
            versions = [v for k, v in pairs if k == "model_version" and v]
            if versions:
                if unserved := self._unserved(path.split("/")[3], versions[-1]):
                    return path, query, unserved, None
                asked = versions[-1]
            query = urlencode([(k, v) for k, v in pairs if k != "model_version"]).encode("latin-1")
        if path.startswith("/v2/repository") and not self.repository_api:
            return path, query, (404, "the model repository API is off here (ZM_SERVING__REPOSITORY_API)"), None
        if path.startswith("/v1/models/") and path.endswith(":explain"):
            return path, query, (404, f"{path}: no explainer is served here"), None
        return path, query, None, asked

    def _tidy(self, send: Callable[[Message], Awaitable[None]]) -> Callable[[Message], Awaitable[None]]:
        """``send`` for kserve's answers: its 422 as a 400 naming the field, a 5xx without exception text."""
        held: Message | None = None
        chunks: list[bytes] = []

        async def tidy(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start":
                status = int(message["status"])
                if status == 422 or (status >= 500 and status != 503):  # 503: not ready, kserve's own words
                    held = message
                    return
            if held is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                await self._reply(send, *_tidied(self.model.family, int(held["status"]), b"".join(chunks)))

        return tidy

    @staticmethod
    async def _json(send: Callable[[Message], Awaitable[None]], status: int, value: Any,
                    extra: list[tuple[bytes, bytes]] | None = None) -> None:
        """One JSON response: every answer the edge gives itself."""
        import orjson

        body = orjson.dumps(value)
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(extra or [])]})
        await send({"type": "http.response.body", "body": body})

    async def _reply(self, send: Callable[[Message], Awaitable[None]], status: int, error: str,
                     close: bool = False, challenge: bool = False) -> None:
        extra = [(b"www-authenticate", b'Bearer realm="zero-margin"')] if challenge else []
        await self._json(send, status, {"error": error}, [*extra, (b"connection", b"close")] if close else extra)

    async def _infer_json(self, send: Callable[[Message], Awaitable[None]], request: Any,
                          headers: Any) -> None:
        from kserve.errors import InvalidInput

        rid = next((v.decode("latin-1") for k, v in headers if k == b"x-request-id"), None)
        extra: dict[str, str] = {}
        try:
            if isinstance(request, dict):
                answer = await self.model.predict_json(request, rid, extra)
            else:
                answer = await self.model.infer_json(request, rid, extra)
        except InvalidInput as error:  # kserve's answer to InvalidInput: 400 {"error": message}
            await self._reply(send, 400, str(error))
            return
        await self._json(send, 200, answer, [(k.encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()])

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._dispatch(scope, receive, sending)
        except Exception:  # an error nobody answered: logged once here, and a 500 without its text
            log.exception("%s: %s %s failed", self.model.family, scope.get("method"), scope.get("path"))
            if started:
                raise
            await self._reply(send, 500, "internal error; the server's log has the details")

    async def _dispatch(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                        send: Callable[[Message], Awaitable[None]]) -> None:
        refused = self._refused(scope, scope.get("path", ""))
        if refused is not None:  # the connection goes too: nobody waits for an unread body on it
            await self._reply(send, *refused, close=True, challenge=refused[0] == 401)
            return
        path, query, answer, asked = self._route(scope.get("path", ""), scope.get("query_string", b""))
        if answer is not None:
            await self._reply(send, *answer)
            return
        if path != scope.get("path") or query != scope.get("query_string", b""):
            scope = {**scope, "path": path, "raw_path": path.encode(), "query_string": query}
        if path == self.metadata_path and scope.get("method") == "GET" and self.model.ready:
            await self._metadata(send)
            return
        if path == self.events_path and scope.get("method") == "POST":
            await self._events(receive, send)
            return
        if path == self.shadow_path and scope.get("method") == "POST":
            await self._shadow(receive, send)
            return
        from inference_services.base import REQUESTED

        token = REQUESTED.set(asked)
        try:
            await self._pass(scope, receive, send, path)
        finally:
            REQUESTED.reset(token)

    async def _read_body(self, receive: Callable[[], Awaitable[Message]],
                         send: Callable[[Message], Awaitable[None]]) -> tuple[bytes | None, int]:
        """The whole body, within the size limit and the timeout; else (None, the status answered)."""
        chunks, size, more = [], 0, True
        while more:
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout)
            except TimeoutError:  # a slow or half-sent body: answered, and the connection goes with it
                await self._reply(send, 408, f"body: not received within {self.body_timeout:g} s", close=True)
                return None, 408
            if message["type"] == "http.disconnect":
                return None, 499
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await self._reply(send, 413, f"body: larger than the limit of {self.max_body} bytes")
                return None, 413
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks), 200

    async def _events(self, receive: Callable[[], Awaitable[Message]],
                      send: Callable[[Message], Awaitable[None]]) -> None:
        """``POST /v1/models/NAME/events``: events validated, answered 202, logged (inference_services.events)."""
        from inference_services import events

        body, _ = await self._read_body(receive, send)
        if body is None:
            return
        try:
            got = events.parse(body, self.model.settings.serving.max_batch)
        except ValueError as error:
            await self._reply(send, 400, str(error))
            return
        self.model.events.append(events.records(got, self.model.events, self.model.family))
        await self._json(send, 202, {"accepted": len(got)})

    async def _shadow(self, receive: Callable[[], Awaitable[Message]],
                      send: Callable[[Message], Awaitable[None]]) -> None:
        """``POST /v1/models/NAME/shadow``: copies of another predictor's answered requests (``serving.shadow_url``
        there), ``{"copies": [{"version", "instances", "answers", "latency_ms"}]}``, answered here by the version
        this predictor serves and compared with production's logged answers (the shadow log, ``zm_shadow_*``)."""
        import orjson
        from kserve.errors import InvalidInput

        body, _ = await self._read_body(receive, send)
        state = self.model.state
        if body is None:
            return
        if state is None or not self.model.ready:
            await self._reply(send, 503, f"{self.model.family}: no version loaded yet")
            return
        try:
            sent = orjson.loads(body)
            copies = []
            for i, copy in enumerate(sent["copies"]):
                rows = self.model.rows_v1({"instances": copy["instances"]})
                answers = copy["answers"]
                if not isinstance(answers, list) or len(answers) != len(rows) or not all(
                        isinstance(a, dict) for a in answers):
                    raise ValueError(f"copies[{i}].answers: one logged answer (an object) per instance")
                copies.append((rows, answers, str(copy["version"]), float(copy["latency_ms"]) / 1000))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, InvalidInput) as error:
            why = f"missing {error}" if isinstance(error, KeyError) else str(error)
            await self._reply(send, 400, f"copies: {why}"[:500])
            return
        counts = await self.model.compare(state, copies)
        await self._json(send, 200, {"shadow": state.version, "compared": len(copies), **counts})

    async def _metadata(self, send: Callable[[Message], Awaitable[None]]) -> None:
        """The V2 model metadata, with the versions served here (kserve's says ``"versions": null``)."""
        await self._json(send, 200, {"name": self.model.family, "versions": self.model.served_versions(),
                                     "platform": "kserve", "inputs": self.model.get_input_types(),
                                     "outputs": self.model.get_output_types()})

    async def _pass(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                    send: Callable[[Message], Awaitable[None]], path: str) -> None:
        protocol = self._protocol(path)
        if protocol is None or scope.get("method") != "POST":
            if self.draining and self._readiness(path):
                await self._reply(send, 503, "draining: shutting down")
                return
            await self.app(scope, receive, self._tidy(send))
            return
        from inference_services import metrics

        started = time.perf_counter()
        status = 500

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            headers = scope.get("headers", ())
            declared = next((v for k, v in headers if k == b"content-length"), None)
            # plain JSON requests are answered here, without kserve's decoders and numpy round trips
            binary = next((v for k, v in headers if k == HEADER), None)
            direct = self.direct and path in (self.v1_path, self.v2_path) and self.model.ready \
                and self.model.current() is not None and binary is None
            if declared is not None and declared.isdigit() and int(declared) > self.max_body:
                status = 413
                await self._reply(send, 413, f"body: larger than the limit of {self.max_body} bytes")
                return
            # read the body up to the limit and within the timeout (kserve reads it whole anyway), then answer
            # or replay it
            body, status = await self._read_body(receive, send)
            if body is None:
                return
            status = 500  # until an answer starts
            if binary is not None:
                problem = binary_request_error(body, binary)
                if problem:
                    status = 400
                    await self._reply(watch, 400, problem)
                    return
            if binary is None:  # a JSON body: strict JSON (no NaN or Infinity) for every route, or a 400
                import orjson

                try:
                    value = orjson.loads(body)
                except orjson.JSONDecodeError as error:
                    status = 400
                    await self._reply(watch, 400, f"body: not valid JSON ({error})")
                    return
            if direct:
                from inference_services.base import JsonInfer

                request: Any = JsonInfer.parse(value) if protocol == "v2" else (
                    value if isinstance(value, dict) else None)
                if request is not None:
                    await self._infer_json(watch, request, headers)
                    return
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            if protocol == "v2" and binary is None and not any(
                    k == b"content-type" and v.startswith(b"application/json") for k, v in headers):
                # without the binary header a V2 body is JSON, whatever its content type says (tritonclient
                # sends none); kserve would read it as bytes
                scope = {**scope, "headers": [*(h for h in headers if h[0] != b"content-type"),
                                              (b"content-type", b"application/json")]}
            await self.app(scope, replay, self._tidy(watch))
        finally:
            if self.instrument:
                state = self.model.current()
                key = (state.version if state is not None else "none", protocol, status)
                meters = self._meters.get(key)
                if meters is None:  # one dict lookup a request instead of two label lookups
                    family, version = self.model.family, key[0]
                    meters = self._meters[key] = (metrics.REQUESTS.labels(family, version, protocol, str(status)),
                                                  metrics.LATENCY.labels(family, version, protocol))
                meters[0].inc()
                meters[1].observe(time.perf_counter() - started)


def _tidied(family: str, status: int, body: bytes) -> tuple[int, str]:
    """What the client gets instead of kserve's 422 (a 400 naming the field) or 5xx (no exception text)."""
    import orjson

    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError:
        raw = body.decode("utf-8", "replace")
    if status == 422:
        detail = raw.get("detail") if isinstance(raw, dict) else None
        first = detail[0] if isinstance(detail, list) and detail and isinstance(detail[0], dict) else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        return 400, f"{where}: {first.get('msg', 'not a valid request')}"
    log.error("%s: answered %d: %s", family, status, str(raw)[:2000])
    return status, "internal error; the server's log has the details"


class _ClientErrors(logging.Filter):
    """kserve logs a traceback for every 4xx; a client's mistake is answered, not logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady

        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, InvalidInput | ModelNotFound | ModelNotReady)


def _quiet() -> None:
    """No per-request log lines or deprecation warnings on the hot path."""
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*ORJSONResponse.*")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("kserve", "kserve.trace", "uvicorn", "uvicorn.access", "uvicorn.error", "mlflow", "feast"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("kserve").addFilter(_ClientErrors())
    log.setLevel(logging.INFO)


def _settle_heap(family: str) -> None:
    """Once a version (or another served version) loaded: collect what the load left, then freeze every object
    alive (gc.freeze), so the garbage collector's full collections, which the requests' allocations trigger, no
    longer walk the libraries and the models. Runs on the event loop once per change (one collection); an
    unloaded version's frozen objects are freed by reference counting, and the next settle unfreezes first, so
    cycles among them are collected."""
    import gc

    started = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    log.info("%s: heap settled in %.0f ms (%d objects frozen)", family, (time.perf_counter() - started) * 1000,
             gc.get_freeze_count())


def run(
    family: str,
    settings: Settings,
    port: int,
    alias: str = "production",
    version: str | None = None,
    constant: bool = False,
) -> int:
    """Serve ``family`` on ``settings.serving.host:port`` until SIGINT/SIGTERM.

    ``constant`` answers every row with the answer to the first row it was asked: the same class,
    validation, batching, cache, log and metrics, answers of the real shape and size, and no
    model work after that one call (the benchmark's "predictor returning a constant").
    """
    _quiet()
    import kserve.model_server as kms
    import uvicorn
    from kserve import ModelServer
    from kserve.protocol.rest.server import RESTServer
    from kserve.protocol.rest.ssl_cert_refresher import SSLCertRefresher
    from timing_asgi import TimingMiddleware

    kms.args.configure_logging = False  # kserve parses sys.argv at import; its logging setup is ours
    model = service_class(family)(settings, alias=alias, version=version)
    if constant:
        _make_constant(model)
    cfg = settings.serving
    for wrapper in cfg.wrappers:  # the rollout drills' faults (delivery.faults); none outside the drills
        catalog.load(wrapper)(model)
    keys = auth.keys(settings) if settings.auth.required else None
    server = ModelServer(http_port=port, enable_grpc=False, enable_latency_logging=False, workers=1,
                         grace_period=cfg.grace_seconds)
    server.register_model(model)  # registered before it is ready: readiness is observable
    # kserve's REST application (its V1 and V2 endpoints and error handlers on kserve.model_server.app), less its
    # timing middleware, which formats a log line for every request; the edge goes in front of it.
    RESTServer(kms.FASTAPI_APP_IMPORT_STRING, server.dataplane, server.model_repository_extension,
               port).create_application()
    kms.app.user_middleware = [m for m in kms.app.user_middleware if m.cls is not TimingMiddleware]
    edge = Edge(kms.app, model=model, max_body=cfg.max_body_bytes, instrument=cfg.instrument,
                body_timeout=cfg.body_timeout_seconds, repository_api=cfg.repository_api, keys=keys,
                direct=cfg.direct_json)
    tls = cfg.tls_cert_file is not None or cfg.tls_key_file is not None  # HTTPS only (cert-manager's certificate)
    if tls and (cfg.tls_cert_file is None or cfg.tls_key_file is None):
        raise SystemExit("zm-serve: ZM_SERVING__TLS_CERT_FILE and ZM_SERVING__TLS_KEY_FILE go together")
    config = uvicorn.Config(edge, host=cfg.host, port=port, log_config=None, access_log=False,
                            timeout_graceful_shutdown=cfg.grace_seconds, timeout_keep_alive=cfg.keep_alive_seconds,
                            limit_concurrency=cfg.max_connections,  # beyond it: 503 at once, before any work
                            ssl_certfile=str(cfg.tls_cert_file) if tls else None,
                            ssl_keyfile=str(cfg.tls_key_file) if tls else None)

    class Draining(uvicorn.Server):
        """uvicorn's server, which drains on SIGTERM and reloads a renewed certificate."""

        draining = False

        async def serve(self, sockets: Any = None) -> None:
            if not self.config.loaded:
                self.config.load()
            refresher = SSLCertRefresher(self.config.ssl, key_path=str(cfg.tls_key_file),
                                         cert_path=str(cfg.tls_cert_file)) if tls else None
            try:
                await super().serve(sockets)
            finally:
                if refresher is not None:
                    refresher.stop()

        def handle_exit(self, sig: int, frame: Any) -> None:
            if self.draining or cfg.drain_seconds <= 0:
                model.ready = False
                super().handle_exit(sig, frame)
                return
            self.draining = edge.draining = True  # readiness false first, so balancers stop sending
            log.info("%s: draining for %.1f s before shutdown", family, cfg.drain_seconds)
            asyncio.get_event_loop().call_later(cfg.drain_seconds, super().handle_exit, sig, frame)

        async def shutdown(self, sockets: Any = None) -> None:
            await super().shutdown(sockets)
            # The requests in flight are answered. uvicorn raises the signal it caught again as soon as serving
            # ends, which ends the process before any code after it: the request log is written here.
            await asyncio.get_running_loop().run_in_executor(None, model.stop)

    http = Draining(config)

    async def lifecycle() -> None:
        loop = asyncio.get_running_loop()
        while True:
            settle = False
            try:
                started = time.perf_counter()
                new = await loop.run_in_executor(None, model.refresh)
                settle = new is not None
                if new is not None:
                    log.info("%s: serving version %s (%s) after %.1f s", family, new, alias,
                             time.perf_counter() - started)
            except Exception as error:  # noqa: BLE001 - a bad version must not stop the server
                log.error("%s: cannot load the %s version, %s: %s (still serving %s)", family, version or alias,
                          type(error).__name__, error, model.state.version if model.state else "nothing")
                if version is not None and model.state is None:
                    # A pinned version will not change: exit like a predictor whose model cannot load
                    # (the orchestrator restarts it or rolls the candidate back) instead of idling unready.
                    log.error("%s: exiting, pinned version %s cannot load", family, version)
                    failed.append(version)
                    http.should_exit = True
                    return
            if model.state is not None:
                try:
                    await loop.run_in_executor(None, model.watch_experiment)
                except Exception as error:  # noqa: BLE001 - the last experiment read stays in force
                    log.warning("%s: cannot read the running experiments, %s: %s", family, type(error).__name__, error)
                try:
                    for other in await loop.run_in_executor(None, model.refresh_others):
                        log.info("%s: serving version %s too, on its versioned paths", family, other)
                        settle = True
                except Exception as error:  # noqa: BLE001 - the alias's version serves on
                    log.warning("%s: cannot load the versions behind %s, %s: %s", family,
                                ", ".join(cfg.version_aliases), type(error).__name__, error)
                try:
                    await loop.run_in_executor(None, model.watch_inputs)
                except Exception as error:  # noqa: BLE001 - cached inputs then expire by age alone
                    log.warning("%s: cannot check the inputs' freshness, %s: %s", family, type(error).__name__, error)
                try:
                    await loop.run_in_executor(None, model.watch_consent)
                except Exception as error:  # noqa: BLE001 - the last register read stays in force
                    log.warning("%s: cannot read the consent register, %s: %s", family, type(error).__name__, error)
            if settle and cfg.gc_freeze:
                _settle_heap(family)
            if cfg.poll_seconds <= 0 and model.state is not None:
                return
            await asyncio.sleep(max(cfg.poll_seconds, 1.0))

    failed: list[str] = []

    async def main_loop() -> None:
        task = asyncio.create_task(lifecycle())
        log.info("%s: listening on http://%s:%d", family, cfg.host, port)
        try:
            await http.serve()
        finally:
            task.cancel()
            model.stop()

    asyncio.run(main_loop())
    return 1 if failed else 0


def _make_constant(model: ServedModel) -> None:
    real = model.answer
    fixed: dict[str, Any] = {}

    async def answer(state: Any, rows: list[Any]) -> list[Any]:
        active = model.state
        if active is None or state is not active:  # the smoke prediction of a version being loaded
            return await real(state, rows)
        if active.version not in fixed:  # the first request's first row
            fixed[active.version] = (await real(state, rows[:1]))[0]
        return [fixed[active.version]] * len(rows)

    model.answer = answer  # type: ignore[method-assign]
    model.check = lambda state, rows: None  # type: ignore[method-assign]


def serve_all(settings: Settings, families: list[str] | None = None) -> int:
    """``make serve``: one process per family; prints the URLs; Ctrl-C stops them all."""
    families = families or list(SERVICES)
    procs = []
    for family in families:
        port = settings.serving.ports[family]
        procs.append(subprocess.Popen([sys.executable, "-m", "inference_services.server", family, "--port", str(port)]))
        print(f"{family}: http://{settings.serving.host}:{port}/v2/models/{family}  "
              f"(V1: /v1/models/{family}:predict, metrics: /metrics)", flush=True)
    print("Ctrl-C stops the services.", flush=True)
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
    failed = [p.returncode for p in procs if (p.returncode or 0) > 0]
    return failed[0] if failed else 0


def _record_start(settings: Settings, workload: str, **arguments: Any) -> None:
    """The audit trail's ``workload.started`` entry, written beside the start (never delaying readiness)."""
    import threading

    from governance import audit

    threading.Thread(target=audit.record_start, args=(settings, workload), kwargs=arguments, daemon=True,
                     name="audit-start").start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="zm-serve",
        description="Serve model families as KServe inference services (V1 and V2 REST) on the configured host.",
        epilog="Settings: ZM_* variables (ZM_HOME, ZM_SERVING__HOST, ZM_SERVING__POLL_SECONDS, ...). "
        "Without a model, every family of the catalog is started, one process each.",
    )
    parser.add_argument("model", nargs="?", choices=list(SERVICES), help="the family to serve (default: every one)")
    parser.add_argument("--port", type=int, default=None, help="HTTP port (default: from settings per model)")
    parser.add_argument("--alias", default="production", help="registry alias to serve (default production)")
    parser.add_argument("--version", default=None, help="serve this registered version instead of the alias")
    parser.add_argument("--constant", action="store_true",
                        help="benchmark baseline: answer every row with one fixed answer (no model work)")
    args = parser.parse_args(argv)
    import os

    # One request is one small computation: OpenMP/BLAS worker threads only spin between requests.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    from zmlops.settings import apply_telemetry_off, get_settings

    apply_telemetry_off()
    settings = get_settings()
    if args.model is None:
        return serve_all(settings)
    port = args.port or settings.serving.ports[args.model]
    _record_start(settings, f"{args.model}-predictor", port=port, alias=args.alias, version=args.version)
    return run(args.model, settings, port, alias=args.alias, version=args.version, constant=args.constant)


if __name__ == "__main__":
    sys.exit(main())
