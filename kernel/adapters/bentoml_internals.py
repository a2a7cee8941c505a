"""BentoML internals (checked against bentoml 1.4.39, and 1.4.40 on 2026-11-30).

- ``IODescriptor``/``IOMixin``/``IORootModel`` (``_bentoml_sdk.io_models``): custom request and
  response parsing for an endpoint, so ``/predict`` can take one object and still be batched.
- ``traffic.TimeoutMiddleware``: BentoML looks this class up in its ``traffic`` module whenever
  it builds a worker's middleware stack; 1.4.39 and 1.4.40 never cancel its per-request timer
  (see ``service.middleware``), so we install a subclass there. Drop the patch when a release
  cancels the timer: ``test_adapters`` then shows no timer left behind without it.
- ``HTTP_APP_LOGGER``: the logger that writes a traceback for every rejected (400) request.
- ``bentoml_home``: where this process's BentoML keeps its model store, as BentoML resolved it
  (from ``BENTOML_HOME`` when bentoml was first imported: later changes are not seen).
- ``relabel_model``: BentoML has no public call to change a stored model's labels; its
  ``ModelInfo`` is a frozen attrs class whose label and metadata dicts we update in place and
  ``flush()`` to the entry's ``model.yaml``.
- ``tracing_sample_rate``: the share of requests BentoML's tracing keeps (0 when unset).
- ``bind_local_callers``: BentoML's ``APIMethod`` is a non-data descriptor that builds a new
  caller (``inspect.signature``, ``functools.wraps``) on every attribute access, twice per
  request; an instance attribute of the same name, set once, is found first.
- ``observe_batching``: adaptive batching is BentoML's ``CorkDispatcher``, created by
  ``_bentoml_impl.server.app.ServiceAppFactory`` (looked up in that module by ``to_asgi``), one
  per batchable endpoint. It has no hook; we install a factory subclass that watches each
  dispatcher: its semaphore (``_sema``: one batch at a time) tells whether the controller found
  the worker busy or held a batch open for company, and its ``outbound_call`` (one call per
  dispatched batch, with the queued ``Job``s and their ``enqueue_time``) gives the batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from _bentoml_impl.server import app as service_app
from _bentoml_sdk.io_models import IODescriptor, IOMixin, IORootModel
from bentoml._internal.marshal.dispatcher import CorkDispatcher, NonBlockSema
from bentoml._internal.server.http import traffic

HTTP_APP_LOGGER = "bentoml._internal.server.http_app"
BentoTimeoutMiddleware = traffic.TimeoutMiddleware
BentoServiceAppFactory = service_app.ServiceAppFactory
logger = logging.getLogger("churn.service.batching")


def install_timeout_middleware(middleware: type) -> None:
    """Make BentoML build every worker's request timeout from ``middleware``."""
    traffic.TimeoutMiddleware = middleware


def installed_timeout_middleware() -> type:
    return traffic.TimeoutMiddleware


def relabel_model(tag: str, labels: dict[str, str], metadata: dict[str, object]) -> None:
    """Update labels and metadata of the stored model ``tag`` and write them to disk."""
    import bentoml

    stored = bentoml.models.get(tag)
    stored.info.labels.update(labels)
    stored.info.metadata.update(metadata)
    stored.flush()


__all__ = ["HTTP_APP_LOGGER", "BATCH_REASONS", "BentoTimeoutMiddleware", "IODescriptor", "IOMixin",
           "IORootModel", "bind_local_callers", "count_lists_directly",
           "install_timeout_middleware",
           "installed_timeout_middleware", "observe_batching", "relabel_model",
           "tracing_sample_rate", "watch_dispatcher"]


def bentoml_home() -> str:
    """The home folder (model store: ``<home>/models``) BentoML uses in this process."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    return str(BentoMLContainer.bentoml_home.get())


def tracing_sample_rate() -> float:
    """The share of requests BentoML's tracing records (``tracing.sample_rate`` of its config,
    ``BENTOML_CONFIG``); BentoML reads an unset rate as 0."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    return float(BentoMLContainer.config.tracing.sample_rate.get() or 0.0)


def bind_local_callers(instance: object) -> list[str]:
    """Build each BentoML API method's local caller of ``instance`` once and keep it on the
    instance, where attribute lookup finds it before the class's ``APIMethod``. Returns the
    names bound."""
    from _bentoml_sdk.method import APIMethod

    bound = []
    for name in dir(type(instance)):
        method = getattr(type(instance), name, None)
        if isinstance(method, APIMethod):
            caller = method.__get__(instance, type(instance))
            vars(instance)[name] = caller
            bound.append(name)
    return bound


# Why a batch left the queue, in the order they are decided.
BATCH_REASONS = ("full", "waited", "backlog", "idle")
BatchHook = Callable[[str, int, list[float], str], None]  # endpoint, size, waits (s), reason
_on_batch: list[BatchHook] = []


class _WatchedSemaphore(NonBlockSema):
    """BentoML's one-batch-at-a-time semaphore, noting what the controller saw between two
    dispatches: the worker busy (``is_locked`` True), or free yet the batch held open for more
    requests (a free look not followed by ``acquire``)."""

    def __init__(self, count: int) -> None:
        super().__init__(count)
        self.busy = self.held = self._free_look = False
        self.reason = "idle"  # of the last batch acquired

    def is_locked(self) -> bool:
        locked = super().is_locked()
        if self._free_look:
            self.held = True
        self._free_look = not locked
        self.busy = self.busy or locked
        return locked

    def acquire(self) -> bool:
        acquired = super().acquire()
        if acquired:
            self.reason = "waited" if self.held else "backlog" if self.busy else "idle"
            self.busy = self.held = self._free_look = False
        return acquired


def watch_dispatcher(dispatcher: CorkDispatcher, endpoint: str, on_batch: BatchHook) -> None:
    """Report every batch ``dispatcher`` sends: ``on_batch(endpoint, requests, waits, reason)``,
    ``waits`` the seconds each request spent queued, ``reason`` one of ``BATCH_REASONS``: full
    (``max_batch_size`` requests), waited (held open for company until the wait the dispatcher
    allows was used up), backlog (queued while the previous batch ran, sent once it finished),
    idle (sent at once: the worker was free and waiting was not worth it)."""
    semaphore = _WatchedSemaphore(1)
    dispatcher._sema = semaphore
    send = dispatcher.outbound_call

    def outbound_call(jobs: tuple, training: bool = False):  # noqa: ANN202 - a coroutine
        try:
            now = time.time()
            reason = "full" if len(jobs) >= dispatcher.max_batch_size else semaphore.reason
            on_batch(endpoint, len(jobs), [now - job.enqueue_time for job in jobs], reason)
        except Exception:  # noqa: BLE001 - observing must never cost a batch
            logger.exception("could not report a batch of %s", endpoint)
        return send(jobs, training)

    dispatcher.outbound_call = outbound_call


def count_lists_directly(dispatcher: CorkDispatcher) -> None:
    """The dispatcher sizes each queued request through ``AutoContainer.get_batch_size``, a
    registry search over lazily imported types (~10 us per request); for a list, what the
    ``/predict`` spec hands it, that search ends in ``DefaultContainer``: ``len(list)``."""
    general = dispatcher.get_batch_size

    def get_batch_size(data: object) -> int:
        return len(data) if type(data) is list else general(data)

    dispatcher.get_batch_size = get_batch_size


class _ObservedServiceAppFactory(BentoServiceAppFactory):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        for endpoint, dispatcher in self.dispatchers.items():
            count_lists_directly(dispatcher)
            watch_dispatcher(dispatcher, endpoint,
                             lambda *batch: [hook(*batch) for hook in _on_batch])


def observe_batching(on_batch: BatchHook) -> None:
    """Make every service app BentoML builds from now on report each adaptive batch to
    ``on_batch`` (see ``watch_dispatcher``). Calling it again replaces the hook."""
    _on_batch[:] = [on_batch]
    service_app.ServiceAppFactory = _ObservedServiceAppFactory
