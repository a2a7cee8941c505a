"""The shadow: a second model that scores every batch the champion scores, off the request path.

Only the champion answers. The shadow gets each scored batch through a bounded queue and scores
it on a thread of its own, after the answer has gone, so it can never change an answer, a status
code or a header, and its failure or slowness never fails a request: a batch it cannot score
(an error), cannot score in time (it waited longer than ``max_lag_seconds``: the shadow falls
behind the traffic) or has no room for (the queue is full) is *skipped*, counted by reason, and
logged without shadow fields. Queued batches are merged into one model call, so a busy server
pays the shadow's fixed cost per call once per merge rather than once per request.

The pairs are the evidence: every batch goes on to the inference log with the shadow's
probability, decision, risk level and version beside the champion's (``kernel.inference_log``:
``SHADOW_FIELDS``), and ``churn shadow analyze`` judges them (``monitoring.judge``). Metrics of
the shadow's predictions carry ``role="shadow"``.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
from collections.abc import Callable

import numpy as np

from kernel.contract import DataContract
from kernel.store import ModelEntry
from service.config import ShadowConfig
from service.inference_log import LogBlock, ShadowScores
from service.metrics import ServiceMetrics
from service.scoring import RISK_LEVELS, Scorer, Scores

logger = logging.getLogger("churn.service.shadow")
_STOP = object()
SKIP_REASONS = ("error", "lag", "queue_full", "incompatible")


SHADOW_TAG_ENV = "CHURN_SHADOW_MODEL_TAG"


def shadow_tag(configured: str | None) -> str | None:
    """``$CHURN_SHADOW_MODEL_TAG`` if set (empty: off), else the config's ``shadow.model_tag``."""
    value = os.environ.get(SHADOW_TAG_ENV)
    if value is None:
        value = configured or ""
    return value.strip() or None


def start_shadow(settings: ShadowConfig, champion: ModelEntry,
                 forward: Callable[[LogBlock], None], metrics: ServiceMetrics
                 ) -> ShadowScorer | None:
    """The shadow the config or environment names, scoring beside ``champion``; None when none
    is named, or when it cannot be loaded (logged: a broken shadow never stops the service)."""
    tag = shadow_tag(settings.model_tag)
    if tag is None:
        return None
    from kernel.store import resolve_entry

    try:
        entry = resolve_entry(tag)
    except Exception:  # noqa: BLE001 - a missing or unreadable shadow must not stop serving
        logger.exception("shadow %s cannot be loaded: serving without a shadow", tag)
        return None
    version = entry.version
    metrics.shadow_started(version, entry.tag, RISK_LEVELS.tolist(), SKIP_REASONS)
    skipped = {reason: metrics.shadow_skipped.labels(reason=reason, model_version=version)
               for reason in SKIP_REASONS}
    shadow = ShadowScorer(
        entry, champion.contract, forward, settings,
        on_scored=lambda scores: metrics.observe(version, scores.probability,
                                                 scores.risk_level, scores.unseen, "shadow"),
        on_skipped=lambda reason, rows: skipped[reason].inc(rows))
    sample = champion.reference[list(champion.contract.features)].head(64)
    shadow.warm_up({name: sample[name].to_numpy() for name in sample.columns})
    logger.info("shadow %s scores beside the champion", entry.tag,
                extra={"model": {"shadow_tag": entry.tag, "shadow_version": version,
                                 "compatible": shadow.problem is None}})
    return shadow


def incompatibility(champion: DataContract, shadow: DataContract) -> str | None:
    """Why the shadow cannot score what the champion's contract validates, or None. It needs
    each of its features, of the same type (a closed or widened category set is fine: the
    shadow flags or encodes unseen values as it would in production)."""
    missing = [n for n in shadow.features if n not in champion.features]
    if missing:
        return f"the shadow needs features the champion's contract does not take: {missing}"
    retyped = [n for n, spec in shadow.features.items()
               if champion.features[n].type != spec.type]
    if retyped:
        return f"features typed differently in the two contracts: {retyped}"
    return None


class ShadowScorer:
    """Scores queued batches with the shadow model on a background thread, then hands each
    batch (with ``block.shadow`` set, or None when skipped) to ``forward``.

    ``on_scored(scores)`` and ``on_skipped(reason, rows)`` are called from that thread
    (metrics hooks)."""

    def __init__(self, entry: ModelEntry, champion: DataContract,
                 forward: Callable[[LogBlock], None], settings: ShadowConfig,
                 on_scored: Callable[[Scores], None] | None = None,
                 on_skipped: Callable[[str, int], None] | None = None) -> None:
        self.tag, self.version = entry.tag, entry.version
        self.forward = forward
        self.settings = settings
        self.on_scored = on_scored or (lambda scores: None)
        self.on_skipped = on_skipped or (lambda reason, rows: None)
        self.problem = incompatibility(champion, entry.contract)
        self.scorer = None if self.problem else Scorer(entry)
        self.features = list(entry.contract.features)
        self.scored = 0
        self.skipped: dict[str, int] = dict.fromkeys(SKIP_REASONS, 0)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._pending = 0
        self._lock = threading.Lock()
        self._closed = False
        if self.problem:
            logger.error("shadow %s disabled: %s", self.tag, self.problem)
        self._thread = threading.Thread(target=self._run, name="shadow", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def warm_up(self, features: dict[str, np.ndarray]) -> bool:
        """Score a sample once (compiles and checks the fast path); False if the shadow cannot
        score it: it then stays on, and each batch is skipped as an error."""
        if self.scorer is None:
            return False
        try:
            self.scorer.score({n: features[n] for n in self.features})
        except Exception:  # noqa: BLE001 - a broken shadow must not stop the service
            logger.exception("shadow %s cannot score the warm-up sample", self.tag)
            return False
        return True

    # -- request path: never blocks, never raises ------------------------------------------
    def submit(self, block: LogBlock) -> None:
        n = len(block)
        if self._closed:
            return self.forward(block)
        with self._lock:
            full = self._pending + n > self.settings.queue_rows
            if not full:
                self._pending += n
        if full:
            self._skip(block, "queue_full")
            return None
        self._queue.put((time.monotonic(), block))
        return None

    def close(self, timeout: float = 30.0) -> None:
        """Score (or skip) what is queued, forward it, and stop the thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)

    # -- the shadow's thread -----------------------------------------------------------------
    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            batch = [item]
            rows = len(item[1])
            while rows < self.settings.merge_rows:  # merge what has queued up meanwhile
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    self._queue.put(_STOP)
                    break
                batch.append(nxt)
                rows += len(nxt[1])
            with self._lock:
                self._pending -= rows
            self._score([block for _, block in batch], min(t for t, _ in batch))

    def _score(self, blocks: list[LogBlock], queued_at: float) -> None:
        if self.scorer is None:
            reason = "incompatible"
        elif time.monotonic() - queued_at > self.settings.max_lag_seconds:
            reason = "lag"
        else:
            reason = None
            try:
                features = {n: _concatenate([b.features[n] for b in blocks])
                            for n in self.features}
                scores = self.scorer.score(features)
            except Exception:  # noqa: BLE001 - never the request's problem; counted, logged
                if self.skipped["error"] == 0:
                    logger.exception("shadow %s failed to score a batch (counted as "
                                     "churn_shadow_skipped_total{reason=\"error\"})", self.tag)
                reason = "error"
        if reason is not None:
            for block in blocks:
                self._skip(block, reason)
            return
        self.on_scored(scores)
        start = 0
        for block in blocks:
            end = start + len(block)
            block.shadow = ShadowScores(self.version, scores.probability[start:end],
                                        scores.will_churn[start:end],
                                        scores.risk_level[start:end])
            start = end
            self.scored += len(block)
            self._forward(block)

    def _skip(self, block: LogBlock, reason: str) -> None:
        self.skipped[reason] += len(block)
        self.on_skipped(reason, len(block))
        self._forward(block)

    def _forward(self, block: LogBlock) -> None:
        try:
            self.forward(block)
        except Exception:  # noqa: BLE001 - the log's own failure is counted by the log
            logger.exception("could not hand a batch to the inference log")


def _concatenate(parts: list[np.ndarray]) -> np.ndarray:
    return parts[0] if len(parts) == 1 else np.concatenate(parts)
