"""The request timeout: 504 after the timeout, and no timer left behind by a finished request."""

from __future__ import annotations

import asyncio

import orjson

from service.middleware import CancellingTimeoutMiddleware

SCOPE = {"type": "http", "method": "POST", "path": "/predict", "headers": []}


def _app(delay: float):
    async def app(scope, receive, send) -> None:
        await asyncio.sleep(delay)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})
    return app


async def _call(delay: float, timeout: float) -> tuple[list[dict], int]:
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    await CancellingTimeoutMiddleware(_app(delay), timeout=timeout)(SCOPE, receive, send)
    pending = [h for h in asyncio.get_running_loop()._scheduled if not h.cancelled()]
    return sent, len(pending)


def test_a_finished_request_leaves_no_timer_behind():
    sent, pending = asyncio.run(_call(delay=0, timeout=60))
    assert sent[0]["status"] == 200
    assert pending == 0  # BentoML's own kept one per request, with its context, for 60 s


def test_a_slow_request_answers_504_as_bentoml_does():
    sent, _ = asyncio.run(_call(delay=5, timeout=0.05))
    assert sent[0]["status"] == 504
    assert orjson.loads(sent[1]["body"]) == {
        "error": "Not able to process the request in 0.05 seconds"}


def test_the_real_service_app_leaves_no_timer_after_a_burst(client, bodies):
    """BentoML builds the app's middleware stack itself; if an upgrade stops taking the timeout
    class from where the adapter installs it, its 60 s timers pile up again, and this fails."""
    for body in bodies[:50]:
        assert client.post("/predict", json=body).status_code == 200

    async def pending_long_timers() -> int:
        loop = asyncio.get_running_loop()
        horizon = loop.time() + 30  # BentoML's timer is the 60 s request timeout
        return sum(1 for h in loop._scheduled if not h.cancelled() and h.when() > horizon)

    assert client.portal.call(pending_long_timers) == 0


def test_requests_beyond_the_in_flight_limit_are_shed_with_429_and_counted():
    from service.middleware import RequestContextMiddleware

    release = asyncio.Event()
    done: list[tuple[str, int]] = []
    rejected: list[tuple[str, str]] = []

    async def slow_app(scope, receive, send) -> None:
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    middleware = RequestContextMiddleware(
        slow_app, max_body_bytes=1000, access_log=False, endpoints=frozenset({"/predict"}),
        on_done=lambda endpoint, status, seconds: done.append((endpoint, status)),
        on_rejected=lambda endpoint, reason: rejected.append((endpoint, reason)),
        max_in_flight=2)

    async def call(path: str = "/predict") -> list[dict]:
        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)

        async def receive() -> dict:
            return {"type": "http.request", "body": b""}

        await middleware({**SCOPE, "path": path, "headers": []}, receive, send)
        return sent

    async def scenario() -> tuple[list, list]:
        first = [asyncio.create_task(call()) for _ in range(2)]
        await asyncio.sleep(0.05)  # both are in flight now
        shed = await call()
        release.set()
        await asyncio.gather(*first)
        return shed, await call()

    shed, after = asyncio.run(scenario())
    assert shed[0]["status"] == 429
    assert (b"retry-after", b"1") in shed[0]["headers"]
    assert orjson.loads(shed[1]["body"])["detail"][0]["type"] == "overloaded"
    assert after[0]["status"] == 200  # capacity is back once the others finish
    assert rejected == [("predict", "overloaded")]
    assert sorted(done) == [("predict", 200)] * 3 + [("predict", 429)]


def test_generated_request_ids_are_version_4_uuids():
    import uuid

    from service.middleware import new_request_id

    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    for value in list(ids)[:50]:
        parsed = uuid.UUID(hex=value)
        assert parsed.hex == value and parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_access_lines_are_what_the_json_logger_writes_and_honour_other_handlers(caplog):
    import io
    import json
    import logging
    from datetime import UTC, datetime

    from service.middleware import (
        _Clock,
        access_logger,
        configure_json_logging,
        request_id_var,
        write_access_line,
    )

    configure_json_logging("v-test")
    (handler,) = logging.getLogger("churn").handlers
    stream = io.StringIO()
    handler.setStream(stream)
    http = {"method": "POST", "path": "/predict", "status": 200, "bytes_in": 12, "ms": 1.25}
    token = request_id_var.set("req-7")
    try:
        write_access_line("req-7", http)  # direct to the stream
        access_logger.info("request", extra={"http": http})  # through logging
    finally:
        request_id_var.reset(token)
    direct, logged = (json.loads(line) for line in stream.getvalue().splitlines())
    assert direct.keys() == logged.keys() and direct.pop("time") and logged.pop("time")
    assert direct == logged
    for now in (1700000000.9999996, 1700000000.0004999, 1700000000.9995, 1764700000.123456):
        assert _Clock.iso(now) == datetime.fromtimestamp(now, UTC).isoformat(
            timespec="milliseconds")
    # Another handler on the way (here pytest's): the record goes through logging.
    caplog.set_level(logging.INFO, logger="churn.service.access")
    access_logger.addHandler(caplog.handler)
    try:
        write_access_line("req-8", http)
    finally:
        access_logger.removeHandler(caplog.handler)
    assert [r.http for r in caplog.records if r.name == "churn.service.access"] == [http]


def test_our_endpoints_leave_tracing_only_while_bentoml_records_no_trace(monkeypatch):
    import re

    import service.middleware as middleware

    config = middleware.untraced({"/predict", "/predict_batch"})
    patterns = [re.compile(p) for p in config["excluded_urls"]]
    matched = [url for url in ("http://h:3000/predict", "http://h:3000/predict_batch",
                               "http://h:3000/livez", "http://h:3000/predict/x")
               if any(p.search(url) for p in patterns)]
    assert matched == ["http://h:3000/predict", "http://h:3000/predict_batch"]
    monkeypatch.setattr(middleware, "tracing_sample_rate", lambda: 0.1)
    assert middleware.untraced({"/predict"}) == {}
