"""Each third-party internal we rely on, checked against the real, installed library: an upgrade
that changes one fails here, loudly. (The BentoML request timeout is checked against the real
service app in tests/service/test_middleware.py.)"""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings

import numpy as np
import pytest


def test_observe_many_equals_observe_per_value_in_a_real_histogram():
    from prometheus_client import CollectorRegistry, Histogram

    from kernel.adapters.prometheus_internals import fast_path_available, observe_many

    values = np.random.default_rng(0).random(1000)
    values[:5] = [0.05, 0.1, 1.0, 0.0, 0.55]  # on bucket bounds: le= means "<="
    buckets = tuple(round(0.05 * i, 2) for i in range(1, 21))
    histograms = []
    for vectorised in (True, False):
        registry = CollectorRegistry()
        histogram = Histogram("h", "h", buckets=buckets, registry=registry)
        if vectorised:
            assert fast_path_available(histogram), "prometheus_client internals changed"
            observe_many(histogram, values)
        else:
            for value in values:
                histogram.observe(value)
        histograms.append({s.name + str(s.labels): s.value
                           for s in next(iter(registry.collect())).samples
                           if s.name != "h_created"})
    fast, slow = histograms
    assert fast.keys() == slow.keys()
    for key in fast:
        assert fast[key] == pytest.approx(slow[key], rel=1e-12), key


def test_mlflow_honours_the_opt_out_of_type_hint_validation():
    import mlflow.pyfunc

    from kernel.adapters.mlflow_internals import UnvalidatedPythonModel, predict_is_wrapped
    from training.tracking import ChurnPyfunc

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")

        class Plain(mlflow.pyfunc.PythonModel):  # the control: MLflow wraps and warns
            def predict(self, context, model_input, params=None):
                return model_input

    assert predict_is_wrapped(Plain), "MLflow no longer wraps predict: drop the adapter"
    assert any("type hint" in str(w.message).lower() for w in caught)
    assert issubclass(ChurnPyfunc, UnvalidatedPythonModel)
    assert not predict_is_wrapped(ChurnPyfunc)


def test_relabelling_a_stored_model_reaches_a_fresh_process(trained_entry, tmp_path):
    import bentoml

    from kernel.adapters.bentoml_internals import relabel_model

    with bentoml.models.create("adapter_probe", labels={"stage": "challenger"},
                               metadata={"decision": "new"}) as model:
        (tmp_path / "unused").write_text("")
    tag = str(model.tag)
    try:
        relabel_model(tag, {"stage": "retired"}, {"decision": "replaced"})
        # Another process reads model.yaml from disk: the change must be there, not in memory.
        probe = (f"import bentoml; m = bentoml.models.get({tag!r}); "
                 "print(m.info.labels['stage'], m.info.metadata['decision'])")
        read = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                              timeout=120)
        assert read.stdout.split() == ["retired", "replaced"], read.stderr[-2000:]
    finally:
        bentoml.models.delete(tag)


def test_validation_tracebacks_of_bentoml_are_filtered_and_other_errors_are_not(caplog):
    from bentoml._internal.server.http_app import log_exception
    from pydantic import BaseModel, ValidationError
    from starlette.requests import Request

    from kernel.adapters.bentoml_internals import HTTP_APP_LOGGER
    from service.middleware import configure_json_logging

    configure_json_logging()
    request = Request({"type": "http", "method": "POST", "path": "/predict", "headers": [],
                       "query_string": b""})

    class Body(BaseModel):
        x: int

    caplog.set_level(logging.ERROR, logger=HTTP_APP_LOGGER)
    try:
        Body.model_validate({"x": "nope"})
    except ValidationError:
        log_exception(request, sys.exc_info())
    try:
        raise RuntimeError("a real server error")
    except RuntimeError:
        log_exception(request, sys.exc_info())
    logged = [r for r in caplog.records if r.name == HTTP_APP_LOGGER]
    assert len(logged) == 1 and isinstance(logged[0].exc_info[1], RuntimeError)


def test_batch_observer_names_why_each_real_bentoml_batch_left():
    """A real CorkDispatcher, driven through each case: idle (sent at once), full
    (max_batch_size queued behind a busy worker), backlog (fewer queued behind it), waited
    (held open for company while the worker was free)."""
    import asyncio

    from bentoml._internal.marshal.dispatcher import CorkDispatcher

    from kernel.adapters.bentoml_internals import BATCH_REASONS, watch_dispatcher

    seen: list[tuple[str, int, list[float], str]] = []

    async def scenario() -> None:
        dispatcher = CorkDispatcher(max_latency_in_ms=10_000, max_batch_size=4,
                                    fallback=lambda: None, get_batch_size=lambda item: 1)
        watch_dispatcher(dispatcher, "echo", lambda *batch: seen.append(batch))
        gate = asyncio.Event()
        gate.set()

        async def infer(batch):
            await gate.wait()
            return list(batch)

        call = dispatcher(infer)
        for i in range(12):  # BentoML first trains its optimizer, one request at a time
            assert await call(i) == i
        dispatcher.optimizer.trigger_refresh = lambda: None  # keep the estimates set below
        dispatcher.optimizer.wait, dispatcher.optimizer.o_a = 0.0, 0.0
        seen.clear()
        assert await call("alone") == "alone"  # nothing to wait for: idle
        gate.clear()
        first = asyncio.ensure_future(call("first"))  # idle too, then blocks the worker
        while len(seen) < 2:
            await asyncio.sleep(0)
        queued = [asyncio.ensure_future(call(k)) for k in range(6)]
        while len(dispatcher._queue) < 6:
            await asyncio.sleep(0)
        gate.set()  # 4 of the 6 leave at once (full), the other 2 behind them (backlog)
        assert await asyncio.gather(first, *queued) == ["first", *range(6)]
        dispatcher.optimizer.wait = 0.2  # the dispatcher now expects company within 0.2 s
        assert await call("held") == "held"
        dispatcher.shutdown()

    asyncio.run(scenario())
    assert [(endpoint, size, reason) for endpoint, size, _, reason in seen] == [
        ("echo", 1, "idle"), ("echo", 1, "idle"), ("echo", 4, "full"), ("echo", 2, "backlog"),
        ("echo", 1, "waited")]
    assert {reason for *_, reason in seen} == set(BATCH_REASONS)
    assert all(len(waits) == size and min(waits) >= 0 for _, size, waits, _ in seen)
    assert seen[-1][2][0] > 0.1  # held open: it waited for company before leaving


def test_service_apps_bentoml_builds_report_their_batches_and_size_lists_directly():
    import bentoml
    import numpy as np
    from _bentoml_impl.server import app as service_app
    from bentoml._internal.runner.container import AutoContainer

    from kernel.adapters.bentoml_internals import (
        BentoServiceAppFactory,
        bind_local_callers,
        observe_batching,
    )

    observe_batching(lambda *batch: None)
    assert issubclass(service_app.ServiceAppFactory, BentoServiceAppFactory)

    @bentoml.service
    class Echo:
        @bentoml.api(batchable=True, max_batch_size=8)
        def echo(self, items: np.ndarray) -> np.ndarray:
            return items

    Echo.inject_config()
    factory = service_app.ServiceAppFactory(Echo)  # what Service.to_asgi builds
    dispatcher = factory.dispatchers["echo"]
    assert type(dispatcher._sema).__name__ == "_WatchedSemaphore"
    for data in ([1, 2, 3], [], np.zeros((5, 2))):
        assert dispatcher.get_batch_size(data) == AutoContainer.get_batch_size(data, 0)
    instance = Echo.inner()
    assert bind_local_callers(instance) == ["echo"]
    caller = instance.echo
    assert instance.echo is caller and caller.local is caller  # built once, found first
    np.testing.assert_array_equal(caller.local(np.ones(3)), np.ones(3))


def test_tracing_sample_rate_reads_bentoml_config():
    from kernel.adapters.bentoml_internals import tracing_sample_rate

    assert tracing_sample_rate() == 0.0  # unset: BentoML records no trace
