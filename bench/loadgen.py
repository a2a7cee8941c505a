"""An HTTP/1.1 load generator light enough to share 2 cores with the server.

Each client holds one keep-alive connection and sends pre-encoded requests back to back (closed
loop), or on a fixed schedule (``rate``: requests per second over all clients), in which case a
latency counts from the scheduled send time, so a stalled server cannot hide its queue
(no coordinated omission).
Python HTTP clients (httpx, aiohttp) spend more CPU per request than the server under test on
this machine; raw asyncio streams on uvloop cost a few tens of microseconds.
"""

from __future__ import annotations

import asyncio
import gc
import re
import time
from dataclasses import dataclass, field

import numpy as np

CONTENT_LENGTH = re.compile(rb"content-length:\s*(\d+)", re.IGNORECASE)
CHUNKED = re.compile(rb"transfer-encoding:\s*chunked", re.IGNORECASE)


def encode_post(path: str, body: bytes, host: str = "127.0.0.1") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


@dataclass
class LoadResult:
    clients: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    connection_errors: int = 0
    rows_per_request: int = 1

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    @property
    def errors(self) -> int:
        return sum(n for s, n in self.statuses.items() if s != 200) + self.connection_errors

    def summary(self) -> dict:
        lat = np.array(self.latencies) * 1000 if self.latencies else np.array([np.nan])
        return {
            "clients": self.clients,
            "req_s": round(self.ok / self.seconds, 1),
            "rows_s": round(self.ok * self.rows_per_request / self.seconds),
            "p50_ms": round(float(np.percentile(lat, 50)), 2),
            "p99_ms": round(float(np.percentile(lat, 99)), 2),
            "errors": self.errors,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
        }


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = CONTENT_LENGTH.search(head)
    if length:
        await reader.readexactly(int(length.group(1)))
    elif CHUNKED.search(head):
        while True:
            size = int((await reader.readline()).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


async def _client(port: int, requests: list[bytes], offset: int, warmup_until: float,
                  stop_at: float, result: LoadResult, interval: float | None = None,
                  start_delay: float = 0.0) -> None:
    reader = writer = None
    i = offset
    if start_delay:
        await asyncio.sleep(start_delay)
    next_send = time.perf_counter()
    while time.perf_counter() < stop_at:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            request = requests[i % len(requests)]
            i += 1
            started = time.perf_counter()
            if interval is not None:
                if next_send > started:
                    await asyncio.sleep(next_send - started)
                started = next_send  # latency from the schedule, not from when we got to it
                next_send += interval
            writer.write(request)
            status = await _read_response(reader)
            finished = time.perf_counter()
            if started >= warmup_until and finished <= stop_at:
                result.latencies.append(finished - started)
                result.statuses[status] = result.statuses.get(status, 0) + 1
        except (OSError, asyncio.IncompleteReadError, ValueError):
            if time.perf_counter() >= warmup_until:
                result.connection_errors += 1
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.01)
    if writer is not None:
        writer.close()


async def _run(port: int, requests: list[bytes], clients: int, seconds: float,
               warmup: float, rows_per_request: int, rate: float | None,
               ramp: float) -> LoadResult:
    now = time.perf_counter()
    result = LoadResult(clients=clients, seconds=seconds, rows_per_request=rows_per_request)
    interval = clients / rate if rate else None
    await asyncio.gather(*(
        _client(port, requests, k * 7, now + warmup, now + warmup + seconds, result, interval,
                start_delay=ramp * k / clients)
        for k in range(clients)
    ))
    return result


def run_load(port: int, requests: list[bytes], clients: int, seconds: float = 10.0,
             warmup: float = 2.0, rows_per_request: int = 1, rate: float | None = None,
             ramp: float = 0.0) -> LoadResult:
    """``clients`` keep-alive connections. Closed loop (each sends its next request on each
    answer), or, with ``rate``, ``rate`` requests per second spread evenly over the clients.
    ``ramp`` spreads the clients' first connections over that many seconds (keep it below
    ``warmup``); by default they all connect at once."""
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    # A cyclic-GC pass over the bench process's heap would stall every client at once and
    # show up as server latency.
    gc.collect()
    gc.disable()
    try:
        return runner(_run(port, requests, clients, seconds, warmup, rows_per_request, rate,
                           ramp))
    finally:
        gc.enable()
