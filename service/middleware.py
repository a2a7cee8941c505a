"""Request id, model identity, body size limit, request metrics and JSON access log for every
request, and JSON log lines.

A pure ASGI middleware (no BaseHTTPMiddleware: that one costs a task per request). The
``X-Request-ID`` header is accepted or generated, returned, kept in a context variable for log
lines and in ``scope["state"]`` for the request parsers, which tag each row with it. Every answer
carries ``X-Model-Version``, and ``/readyz`` answers which model is served (tag and version), so
a probe, a canary check or a curl can tell two versions behind one Service apart.

Also BentoML's request timeout, fixed (``use_cancelling_timeout``).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import orjson

from kernel.adapters.bentoml_internals import (
    HTTP_APP_LOGGER,
    BentoTimeoutMiddleware,
    install_timeout_middleware,
    tracing_sample_rate,
)
from service.openapi import error_answer

REQUEST_ID_HEADER = b"x-request-id"
MODEL_VERSION_HEADER = b"x-model-version"
NOT_TRAFFIC = frozenset({"/metrics", "/livez", "/readyz", "/healthz", "/docs.json", "/"})
MAX_REQUEST_ID_LENGTH = 128
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
access_logger = logging.getLogger("churn.service.access")


def request_id_of(scope: dict) -> str:
    """The request id the middleware chose for this request (empty outside a request)."""
    return scope.get("state", {}).get("request_id", "") or request_id_var.get()


def new_request_id() -> str:
    """A random version-4 UUID as 32 hex digits, what ``uuid.uuid4().hex`` returns, without
    building a UUID object (~4x cheaper)."""
    value = int.from_bytes(os.urandom(16), "big")
    value = (value & ~(0xC000 << 48) | 0x8000 << 48) & ~(0xF000 << 64) | 4 << 76
    return f"{value:032x}"


def untraced(endpoints: Iterable[str]) -> dict:
    """BentoML's ``tracing`` settings for the service: ``endpoints`` left out of tracing while
    BentoML records no trace (its sample rate is 0 unless configured). Unsampled, its
    OpenTelemetry middleware still builds four spans per request (the request, receive, two
    sends): ~0.7 ms of CPU, more than scoring a batch. A configured sample rate keeps them."""
    if tracing_sample_rate() > 0:
        return {}
    return {"excluded_urls": [f"{re.escape(path)}$" for path in sorted(endpoints)]}


def _usable(value: bytes) -> str | None:
    text = value.decode("latin-1").strip()
    if 0 < len(text) <= MAX_REQUEST_ID_LENGTH and text.isprintable():
        return text
    return None


class RequestContextMiddleware:
    """Tags each request with an id and the served model, refuses bodies over
    ``max_body_bytes`` (413) and requests beyond ``max_in_flight`` per worker (429, shed),
    answers ``/readyz`` with the model, and writes one JSON access-log line per request.

    ``on_rejected(endpoint, reason)`` counts refused requests; ``on_done(endpoint, status,
    seconds)`` every answered one. ``endpoint`` is one of the ``endpoints`` paths without its
    slash, or "other": stray paths must not create unbounded metric series."""

    def __init__(self, app: Callable, max_body_bytes: int, access_log: bool = True,
                 on_rejected: Callable[[str, str], None] | None = None,
                 model: dict[str, str] | None = None,
                 endpoints: frozenset[str] = frozenset(),
                 on_done: Callable[[str, int, float], None] | None = None,
                 max_in_flight: int | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.access_log = access_log
        self.on_rejected = on_rejected or (lambda endpoint, reason: None)
        self.on_done = on_done or (lambda endpoint, status, seconds: None)
        self.model = dict(model or {})
        self.endpoints = endpoints
        self.version_header = (MODEL_VERSION_HEADER,
                               self.model.get("model_version", "").encode("latin-1"))
        self.max_in_flight = max_in_flight
        self.in_flight = 0

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = None
        length = None
        for name, value in scope.get("headers", ()):
            if name == REQUEST_ID_HEADER:
                request_id = _usable(value)
            elif name == b"content-length":
                length = int(value) if value.isdigit() else None
        request_id = request_id or new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)
        status = 500
        header = (REQUEST_ID_HEADER, request_id.encode("latin-1"))

        async def send_with_id(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header, self.version_header]
            await send(message)

        path = scope.get("path", "")
        endpoint = path.strip("/") if path in self.endpoints else "other"
        try:
            if path == "/readyz":
                status = await self._readyz(scope, receive, send_with_id)
            elif (self.max_in_flight is not None and path in self.endpoints
                  and self.in_flight >= self.max_in_flight):
                # Shed instead of queueing without bound: a 429 now beats a timeout later, and
                # the client (or the next pod behind the Service) can retry.
                status = 429
                self.on_rejected(endpoint, "overloaded")
                await _send_json(send_with_id, 429, error_answer(
                    "overloaded", "overloaded", f"{self.in_flight} requests in flight in this "
                    f"worker (limit {self.max_in_flight}); retry shortly"),
                    headers=[(b"retry-after", b"1")])
            elif length is not None and length > self.max_body_bytes:
                status = 413
                self.on_rejected(endpoint, "body_too_large")
                await _send_json(send_with_id, 413, error_answer(
                    "request body too large", "body_too_large",
                    f"body is {length} bytes; the limit is {self.max_body_bytes}", ["body"]))
            else:
                self.in_flight += 1
                try:
                    await self.app(scope, receive, send_with_id)
                finally:
                    self.in_flight -= 1
        finally:
            seconds = time.perf_counter() - started
            if path not in NOT_TRAFFIC:
                self.on_done(endpoint, status, seconds)
                if self.access_log:
                    write_access_line(request_id, {
                        "method": scope.get("method"), "path": path, "status": status,
                        "bytes_in": length, "ms": round(seconds * 1000, 3)})
            request_id_var.reset(token)

    async def _readyz(self, scope: dict, receive: Callable, send: Callable) -> int:
        """BentoML's readiness answer, with the served model as JSON when it is ready."""
        started: dict = {}
        chunks: list[bytes] = []

        async def capture(message: dict) -> None:
            if message["type"] == "http.response.start":
                started.update(message)
            else:
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, capture)
        if started.get("status") == 200:
            await _send_json(send, 200, {"status": "ready", **self.model})
            return 200
        await send(started)
        await send({"type": "http.response.body", "body": b"".join(chunks)})
        return int(started.get("status", 500))


async def _send_json(send: Callable, status: int, body: dict,
                     headers: list[tuple[bytes, bytes]] | None = None) -> None:
    payload = orjson.dumps(body)
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
        *(headers or []),
    ]})
    await send({"type": "http.response.body", "body": payload})


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, the served model
    version, extra fields."""

    model_version = ""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": request_id_var.get(),
            "model_version": self.model_version,
        }
        for key in ("http", "model", "validation"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info).splitlines()[-1]
        return orjson.dumps(entry, default=str).decode()


class _ValidationTracebacks(logging.Filter):
    """BentoML logs every rejected request as an ERROR with a traceback; a 400 for bad input is
    not a server error. We log those ourselves (one JSON line with the reasons)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from pydantic import ValidationError

        return not (record.exc_info and isinstance(record.exc_info[1], ValidationError))


class _Clock:
    """``datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")``, the date and time
    formatted once per second."""

    second = -1
    prefix = ""

    @classmethod
    def iso(cls, now: float) -> str:
        second = int(now)
        micro = round((now - second) * 1e6)  # as datetime.fromtimestamp rounds
        if micro >= 1_000_000:
            second, micro = second + 1, micro - 1_000_000
        if second != cls.second:
            cls.second = second
            cls.prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{cls.prefix}.{micro // 1000:03d}+00:00"


def _json_handler(log: logging.Logger) -> logging.StreamHandler | None:
    """The one JSON stream handler ``log``'s INFO records reach, when nothing else (a filter,
    another handler, a level) would see or stop them on the way; else None."""
    if log.disabled or not log.isEnabledFor(logging.INFO):
        return None
    while log is not None:
        if log.filters:
            return None
        if log.handlers:
            handler = log.handlers[0]
            if (len(log.handlers) != 1 or log.propagate
                    or not isinstance(handler, logging.StreamHandler) or handler.filters
                    or type(handler.formatter) is not JsonFormatter
                    or handler.level > logging.INFO):
                return None
            return handler
        if not log.propagate:
            return None
        log = log.parent
    return None


def write_access_line(request_id: str, http: dict) -> None:
    """One access-log line, exactly what ``JsonFormatter`` writes for
    ``access_logger.info("request", extra={"http": http})``, straight to the JSON handler's
    stream: logging's machinery (caller lookup, LogRecord, formatter) costs ~25 us per request,
    this ~5 us. When logging is configured otherwise (another handler, a filter, a level),
    the record goes through the logger as before."""
    handler = _json_handler(access_logger)
    if handler is None:
        access_logger.info("request", extra={"http": http})
        return
    line = orjson.dumps({
        "time": _Clock.iso(time.time()), "level": "INFO", "logger": access_logger.name,
        "message": "request", "request_id": request_id,
        "model_version": JsonFormatter.model_version, "http": http,
    }, default=str).decode() + handler.terminator
    handler.acquire()
    try:
        handler.stream.write(line)
        handler.flush()
    except Exception:  # noqa: BLE001 - as logging does: report, never fail the request
        handler.handleError(logging.makeLogRecord({"msg": line}))
    finally:
        handler.release()


def configure_json_logging(model_version: str = "", level: int = logging.INFO) -> None:
    """Our loggers (``churn.*``) write JSON lines to stderr, each naming the served model
    version; quiet BentoML's 400 tracebacks."""
    JsonFormatter.model_version = model_version
    logger = logging.getLogger("churn")
    if not any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    bentoml_errors = logging.getLogger(HTTP_APP_LOGGER)
    if not any(isinstance(f, _ValidationTracebacks) for f in bentoml_errors.filters):
        bentoml_errors.addFilter(_ValidationTracebacks())


class CancellingTimeoutMiddleware(BentoTimeoutMiddleware):
    """BentoML's request timeout (504 after ``traffic.timeout`` seconds), with its timer cancelled
    once the response starts.

    BentoML 1.4.39 never cancels the per-request ``call_later`` timer, and each timer keeps the
    request's context (its tracing span and more, ~20 objects) alive for the whole timeout: at
    2,000 requests/s and 60 s that is ~2 million live objects per worker, and each full GC pass
    over them stopped the worker for 50-150 ms, the p99 of ``/predict``.
    """

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

        async def send_started(message: dict) -> None:
            if not waiter.done():
                waiter.set_result(None)
            await send(message)

        answer = asyncio.ensure_future(self.app(scope, receive, send_started))
        try:
            await waiter
        except TimeoutError:
            if answer.cancel():
                await _send_json(send, 504, {
                    "error": f"Not able to process the request in {self.timeout} seconds"})
            return
        finally:
            timer.cancel()
        await answer


def use_cancelling_timeout() -> None:
    """Make BentoML build its apps with ``CancellingTimeoutMiddleware``."""
    install_timeout_middleware(CancellingTimeoutMiddleware)
