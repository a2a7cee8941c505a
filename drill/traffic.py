"""Requests to a running service, as clients send them: bodies built from generated customers,
batches, a steady or overwhelming load that records every request (which customer, which
status, how long), and the service's own counters read from /metrics."""

from __future__ import annotations

import asyncio
import itertools
import math
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import httpx
import numpy as np
import pandas as pd


def bodies_of(frame: pd.DataFrame, contract, prefix: str) -> list[dict]:
    """One /predict body per row, each with a fresh id ``<prefix><n>`` (ids tie an answer to
    its record in the inference log and to its late label)."""
    from service.schema import customer_body

    rows = frame.copy()
    rows[contract.id] = [f"{prefix}{i:06d}" for i in range(len(rows))]
    return [customer_body(contract, row) for row in rows.to_dict("records")]


def send_batches(url: str, bodies: list[dict], rows: int = 100) -> Counter:
    """POST ``bodies`` to /predict_batch, ``rows`` at a time; status counts."""
    codes: Counter = Counter()
    with httpx.Client(base_url=url, timeout=60) as client:
        for start in range(0, len(bodies), rows):
            codes[client.post("/predict_batch",
                              json={"customers": bodies[start:start + rows]}).status_code] += 1
    return codes


# ------------------------------------------------------------------ /metrics


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of the service's /metrics: (name, labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=30).text
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def total(samples: dict[tuple[str, frozenset], float], name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(value for (sample, have), value in samples.items()
               if sample == name and wanted <= have)


def by_label(samples: dict[tuple[str, frozenset], float], name: str, label: str,
             **labels: str) -> dict[str, float]:
    """``name`` summed per value of ``label`` (among samples that include ``labels``)."""
    wanted = set(labels.items())
    out: dict[str, float] = {}
    for (sample, have), value in samples.items():
        if sample == name and wanted <= have:
            key = dict(have).get(label, "")
            out[key] = out.get(key, 0.0) + value
    return out


def difference(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    """Per-key increase, keys that did not move left out."""
    return {key: after[key] - before.get(key, 0.0) for key in after
            if after[key] != before.get(key, 0.0)}


# ------------------------------------------------------------------ load


@dataclass(frozen=True)
class Answer:
    """One request of a load: its customer, status (None: no answer, e.g. refused or reset)
    and when (``time.monotonic()``) it was sent and answered."""

    customer_id: str
    status: int | None
    sent: float
    answered: float

    @property
    def seconds(self) -> float:
        return self.answered - self.sent


@dataclass
class Load:
    """``clients`` keep-alive connections sending /predict with fresh customer ids, in a
    background thread until ``stop()``: closed loop, or ``rate`` requests/s over all clients.
    A client pauses ``pause_after`` seconds after a 429 or a failed connection (a client that
    honours back-pressure, but impatiently)."""

    url: str
    bodies: list[dict]
    id_field: str
    prefix: str
    clients: int
    rate: float | None = None
    pause_after: float = 0.05
    timeout: float = 30.0
    answers: list[Answer] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._numbers: Iterator[int] = itertools.count()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()),
                                        name="drill-load", daemon=True)

    def start(self) -> Load:
        self._thread.start()
        return self

    def stop(self, timeout: float = 60.0) -> list[Answer]:
        """Stop sending; requests in flight get up to ``timeout`` s. Returns every answer."""
        self._stop.set()
        self._thread.join(timeout)
        return self.answers

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _body(self) -> tuple[str, dict]:
        number = next(self._numbers)
        customer = f"{self.prefix}{number:07d}"
        return customer, {**self.bodies[number % len(self.bodies)], self.id_field: customer}

    async def _client(self, client: httpx.AsyncClient, offset: float) -> None:
        interval = self.clients / self.rate if self.rate else None
        next_send = time.monotonic() + offset
        while not self._stop.is_set():
            if interval is not None:
                wait = next_send - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                next_send += interval
            customer, body = self._body()
            sent = time.monotonic()
            try:
                status: int | None = (await client.post("/predict", json=body)).status_code
            except httpx.HTTPError:
                status = None
            self.answers.append(Answer(customer, status, sent, time.monotonic()))
            if status is None or status == 429:
                await asyncio.sleep(self.pause_after)

    async def _one(self, offset: float) -> None:
        # One connection per client, each with a pool of its own: a pool shared by many
        # coroutines costs the load generator more CPU per request than the server spends.
        async with httpx.AsyncClient(base_url=self.url, timeout=self.timeout,
                                     limits=httpx.Limits(max_connections=1)) as client:
            await self._client(client, offset)

    async def _main(self) -> None:
        spread = (self.clients / self.rate) if self.rate else 0.0
        await asyncio.gather(*(self._one(spread * k / self.clients)
                               for k in range(self.clients)))


def statuses(answers: Iterable[Answer]) -> dict[str, int]:
    """Status counts, "none" for requests that got no answer."""
    counts = Counter("none" if a.status is None else str(a.status) for a in answers)
    return dict(sorted(counts.items()))


def percentile_ms(answers: list[Answer], q: float) -> float | None:
    if not answers:
        return None
    return round(float(np.percentile([a.seconds for a in answers], q)) * 1000, 1)


def histogram_increase(before: dict[tuple[str, frozenset], float],
                       after: dict[tuple[str, frozenset], float], name: str,
                       **labels: str) -> dict[float, float]:
    """Per upper bound ``le``, how many observations of histogram ``name`` (summed over the
    samples whose labels include ``labels``) were added between two scrapes; cumulative."""
    def buckets(samples: dict[tuple[str, frozenset], float]) -> dict[float, float]:
        out: dict[float, float] = {}
        for key, value in by_label(samples, f"{name}_bucket", "le", **labels).items():
            out[float(key)] = value
        return out

    start, end = buckets(before), buckets(after)
    return {le: end[le] - start.get(le, 0.0) for le in sorted(end)}


def upper_quantile(cumulative: dict[float, float], q: float, fastest_excluded: int = 0
                   ) -> float | None:
    """The upper bound (s) of the bucket holding the ``q`` quantile of a cumulative histogram,
    with the ``fastest_excluded`` fastest observations left out (requests shed at once, which
    would flatter the quantile of those answered); None when nothing is left."""
    total_count = cumulative.get(math.inf, 0.0) - fastest_excluded
    if total_count <= 0:
        return None
    for le in sorted(cumulative):
        if cumulative[le] - fastest_excluded >= q * total_count:
            return le
    return math.inf
