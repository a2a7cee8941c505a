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
"""

from __future__ import annotations

from _bentoml_sdk.io_models import IODescriptor, IOMixin, IORootModel
from bentoml._internal.server.http import traffic

HTTP_APP_LOGGER = "bentoml._internal.server.http_app"
BentoTimeoutMiddleware = traffic.TimeoutMiddleware


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


__all__ = ["HTTP_APP_LOGGER", "BentoTimeoutMiddleware", "IODescriptor", "IOMixin", "IORootModel",
           "install_timeout_middleware", "installed_timeout_middleware", "relabel_model"]


def bentoml_home() -> str:
    """The home folder (model store: ``<home>/models``) BentoML uses in this process."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    return str(BentoMLContainer.bentoml_home.get())
