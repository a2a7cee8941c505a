"""The churn prediction service: ``bentoml serve service.service:ChurnService``.

Importing this module does what BentoML needs from it at import, and nothing else:

1. ``ServiceConfig.locate()``: the config, by the project's one rule (``CHURN_SERVICE_CONFIG``,
   else configs/service.yaml, else defaults): BentoML reads workers, timeout and batching from
   the decorators;
2. ``serve_model(config)``: which model, and the request schema built from its contract
   (``CHURN_MODEL_TAG`` names it, ``service/served.py``): ``bentoml build`` packs the model
   declared on the class, and the decorators take the request models. Only the store entry's
   metadata, contract and one reference row are read; the model itself loads in each worker's
   ``__init__``;
3. ``install_request_handling(ChurnService)``: BentoML's request-timeout fix and our ASGI
   middleware (request ids, JSON access log, body limit, load shedding; the OpenAPI document and
   one error shape, ``service/openapi.py``), which BentoML reads from the class when it builds
   each worker's app.

Everything else (metrics, JSON logging, the inference log, the warm-up) happens in
``ChurnService.__init__``, in the worker.
"""

from __future__ import annotations

import gc
import logging
import os
import time

import bentoml
import numpy as np

from kernel.adapters.bentoml_internals import (
    BATCH_REASONS,
    bind_local_callers,
    observe_batching,
)
from kernel.store import load_entry
from service.config import PROCESS_ENVIRONMENT, ServiceConfig
from service.http_io import (
    CustomerColumns,
    Row,
    customer_batch_spec,
    json_body_response,
    single_customer_spec,
    single_prediction_spec,
)
from service.inference_log import LogBlock, start_inference_log, utc_timestamp
from service.metrics import service_metrics
from service.middleware import (
    RequestContextMiddleware,
    configure_json_logging,
    untraced,
    use_cancelling_timeout,
)
from service.openapi import ApiContract, openapi_document
from service.schema import BatchPrediction, Prediction
from service.scoring import RISK_LEVELS, Scorer, Scores
from service.served import answers, batch_body, serve_model
from service.shadow import shadow_tag, start_shadow

# Process settings for BentoML's workers (service/config.py): the parent imports this module
# before it starts them, and each reads these at its own start. A value already set wins.
for _name, _value in PROCESS_ENVIRONMENT.items():
    os.environ.setdefault(_name, _value)


logger = logging.getLogger("churn.service")
config_file = ServiceConfig.find()
config = ServiceConfig.from_yaml(config_file.path)
served = serve_model(config)
VERSION = served.entry.version
ENDPOINTS = frozenset({"/predict", "/predict_batch"})


def _count_invalid(endpoint: str, reasons: list[str]) -> None:
    service_metrics().validation_failed(VERSION, endpoint, reasons)


@bentoml.service(
    name="churn_service",
    workers=config.workers,
    traffic={"timeout": config.timeout_seconds},
    logging={"access": {"enabled": False}},  # replaced by our JSON access log (with request id)
    tracing=untraced(ENDPOINTS),
)
class ChurnService:
    model_ref = bentoml.models.BentoModel(served.entry.tag)

    def __init__(self) -> None:
        configure_json_logging(VERSION)
        logger.info(config_file.describe())
        entry = load_entry(str(self.model_ref.tag))
        self.scorer = Scorer(entry, config.recommendations, threads=config.large_request_threads)
        self.metrics = service_metrics()
        meta = entry.metadata
        self.metrics.model_info.labels(model_version=entry.version, model_tag=entry.tag,
                                       trained_at=meta.trained_at).set(1)
        self.metrics.model_roc_auc.labels(model_version=entry.version).set(meta.metrics.roc_auc)
        self.metrics.model_loaded.labels(model_version=entry.version).set(time.time())
        self.metrics.start_at_zero(entry.version, RISK_LEVELS.tolist(),
                                   [e.strip("/") for e in ENDPOINTS])
        if config.batching.enabled:
            self.metrics.batching_started(entry.version, ["predict"], BATCH_REASONS)
        self.inference_log = start_inference_log(
            config.inference_log, entry, self.metrics,
            shadow=shadow_tag(config.shadow.model_tag) is not None)
        self.shadow = start_shadow(config.shadow, entry, self._log, self.metrics)
        sample = entry.reference[list(entry.contract.features)].head(256)
        difference = self.scorer.verify(sample)  # warm-up, and proof the fast path is exact
        self._ready = len(sample) == 0 or bool(np.isfinite(self.scorer.probabilities(sample)).all())
        # Everything loaded so far lives as long as the worker: keep it out of the cyclic GC,
        # whose full passes over the model and pandas cost 100+ ms when a 10,000-row body
        # allocates a few hundred thousand objects.
        gc.collect()
        gc.freeze()
        bind_local_callers(self)  # BentoML would rebuild them twice per request
        logger.info("ready", extra={"model": {**served.identity, "fast_path": bool(
            self.scorer.builder), "max_difference": difference, "ready": self._ready}})

    def __is_ready__(self) -> bool:
        return self._ready

    @bentoml.api(
        route="/predict",
        input_spec=single_customer_spec(served.customer, _count_invalid),
        output_spec=single_prediction_spec(Prediction),
        batchable=config.batching.enabled,
        max_batch_size=config.batching.max_batch_size,
        max_latency_ms=config.batching.max_latency_ms,
    )
    def predict(self, rows: list[Row], /) -> list[dict]:
        """Churn risk of one customer. Concurrent requests are batched into one model call."""
        columns = served.columns([r.customer for r in rows])
        scores = self._score(columns, [r.request_id for r in rows])
        return answers(scores, columns.ids, VERSION, self.scorer.recommendations)

    @bentoml.api(
        route="/predict_batch",
        input_spec=customer_batch_spec(served.batch, served.contract, config.max_batch_rows,
                                       _count_invalid, threads=config.large_request_threads),
        output_spec=BatchPrediction,
    )
    def predict_batch(self, customers: CustomerColumns) -> BatchPrediction:
        """Churn risk of up to max_batch_rows customers, with a summary."""
        scores = self._score(customers, customers.request_id)
        return json_body_response(batch_body(scores, customers, VERSION,
                                             self.scorer.recommendations))

    def _score(self, columns: CustomerColumns, request_ids: list[str] | str) -> Scores:
        """Score, count and log (off the request path) one batch of validated customers
        (``request_ids``: one per row, or the one of every row)."""
        scores = self.scorer.score(columns.features, columns.texts)
        self.metrics.observe(VERSION, scores.probability, scores.risk_level, scores.unseen)
        if self.inference_log is not None or self.shadow is not None:
            block = LogBlock(
                timestamp=utc_timestamp(), request_ids=request_ids, customer_ids=columns.ids,
                features=columns.features, probability=scores.probability,
                will_churn=scores.will_churn, risk_level=scores.risk_level, unseen=scores.unseen,
                texts=columns.held_texts())
            if self.shadow is not None:  # scores it after the answer, then logs it
                self.shadow.submit(block)
            else:
                self._log(block)
        return scores

    def _log(self, block: LogBlock) -> None:
        if self.inference_log is not None:
            self.inference_log.log(block)

    @bentoml.on_shutdown
    def close_inference_log(self) -> None:
        """Drain the shadow's queue, then the inference log, before the worker exits (graceful
        stop, SIGTERM)."""
        if self.shadow is not None:
            self.shadow.close()
        if self.inference_log is not None:
            self.inference_log.close()


def install_request_handling(service: type) -> None:
    """BentoML's request timeout that cancels its timer (``service/middleware.py``), and our
    middleware on ``service``: request ids, the JSON access log, the body limit, load
    shedding beyond ``max_in_flight``, and the request metrics; inside it, the API contract
    (``service/openapi.py``): the OpenAPI document at /docs.json, 415 for a body not sent as
    JSON, one error shape for every error answer; and the adaptive-batching metrics (each
    batch's size, why it left, each request's wait)."""
    use_cancelling_timeout()
    observe_batching(lambda endpoint, size, waits, reason: service_metrics().batch_dispatched(
        VERSION, endpoint, size, waits, reason))
    service.add_asgi_middleware(
        RequestContextMiddleware, max_body_bytes=config.max_body_bytes,
        access_log=config.access_log, on_rejected=lambda endpoint, reason: _count_invalid(
            endpoint, [reason]), model=served.identity, endpoints=ENDPOINTS,
        on_done=lambda endpoint, status, seconds: service_metrics().request_done(
            VERSION, endpoint, status, seconds), max_in_flight=config.max_in_flight)
    service.add_asgi_middleware(
        ApiContract, document=lambda: openapi_document(service.openapi_spec.asdict(), VERSION),
        endpoints=ENDPOINTS, max_body_bytes=config.max_body_bytes,
        on_rejected=lambda endpoint, reason: _count_invalid(endpoint, [reason]))


install_request_handling(ChurnService)
