"""Dask for the jobs that outgrow one process (`churn score --dask`, `churn drift --dask`): a
``distributed.LocalCluster`` sized to this machine, or an existing scheduler by address.

The sizing rule (docs/scale.md): one worker process per CPU the process may use (cgroup quota
and affinity, as ``dask.system.CPU_COUNT`` reads them), one thread each (scoring and drift are
pandas/numpy code that holds the GIL for much of its time, so processes, not threads, scale),
and 80% of the memory the process may use (cgroup limit or RAM, ``distributed``'s own reading)
split evenly between the workers; the rest is left to the client process and the OS.

Imports dask only inside functions: the service never needs it (not in the Bento).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger("churn.cluster")

LOCAL = "local"  # `--dask` alone (or `--dask local`): a LocalCluster sized to the machine
SCHEDULER_ENV = "CHURN_DASK_SCHEDULER"  # how a pod names its scheduler (k8s/components/dask)
DEFAULT_CONNECT_TIMEOUT = 20.0
# Partition bounds (kernel/partitions.py; explained in docs/scale.md): a task
# of 500k rows takes seconds, so scheduling overhead is negligible, 1M rows already make two
# tasks (one per worker on 2 cores), and a worker's memory is bounded
# by the chunk it scores at a time plus its share of the input bytes.
DEFAULT_PARTITION_ROWS = 500_000
DEFAULT_PARTITION_BYTES = 128 * 2**20
WORKER_MEMORY_SHARE = 0.8
_ADDRESS = re.compile(r"^(tcp|tls)://[^\s/:]+:\d{1,5}$")


class ClusterError(ConnectionError):
    """The Dask scheduler could not be reached, or a cluster could not be started."""


@dataclass(frozen=True)
class LocalClusterSize:
    workers: int
    threads_per_worker: int
    memory_limit_bytes: int  # per worker; the worker pauses, then restarts, past it

    def __str__(self) -> str:
        return (f"{self.workers} workers x {self.threads_per_worker} thread, "
                f"{self.memory_limit_bytes / 2**30:.1f} GiB each")


def local_cluster_size(cpus: int | None = None, memory_bytes: int | None = None
                       ) -> LocalClusterSize:
    """Workers = usable CPUs, 1 thread each, 80% of usable memory shared out evenly."""
    if cpus is None:
        from dask.system import CPU_COUNT

        cpus = CPU_COUNT
    if memory_bytes is None:
        from distributed.system import MEMORY_LIMIT

        memory_bytes = MEMORY_LIMIT
    workers = max(1, int(cpus))
    return LocalClusterSize(workers=workers, threads_per_worker=1,
                            memory_limit_bytes=int(memory_bytes * WORKER_MEMORY_SHARE / workers))


def describe(address: str) -> str:
    return "a LocalCluster sized to this machine" if address == LOCAL else address


@contextlib.contextmanager
def dask_client(address: str = LOCAL, *, timeout: float = DEFAULT_CONNECT_TIMEOUT,
                size: LocalClusterSize | None = None) -> Iterator[Client]:
    """A connected ``distributed.Client``: to a new LocalCluster (``address`` "local", closed
    on exit) or to the scheduler at ``tcp://host:port`` (left running on exit).

    Raises ClusterError, before any work is submitted, for a malformed address or a scheduler
    that does not answer within ``timeout`` seconds.
    """
    from distributed import Client, LocalCluster

    if address != LOCAL and not _ADDRESS.match(address):
        raise ClusterError(f"Dask scheduler address {address!r} is not like tcp://host:8786 "
                           f"(or give --dask alone for a local cluster)")
    if address == LOCAL:
        size = size or local_cluster_size()
        log.info("starting a Dask LocalCluster: %s", size)
        # The scheduler runs in this process and logs every worker and client at INFO.
        quiet = logging.getLogger("distributed")
        level = quiet.level
        quiet.setLevel(logging.WARNING)
        try:
            # Any free port for the scheduler's HTTP endpoint: 8787 may be another user's.
            cluster = LocalCluster(n_workers=size.workers,
                                   threads_per_worker=size.threads_per_worker,
                                   memory_limit=size.memory_limit_bytes, processes=True,
                                   dashboard_address=":0", silence_logs=logging.ERROR)
        except Exception as exc:
            quiet.setLevel(level)
            raise ClusterError(f"cannot start a Dask LocalCluster ({size}): {exc}") from exc
        try:
            with Client(cluster) as client:
                yield client
        finally:
            # Closing races the scheduler's last messages to the client: tracebacks of
            # closed connections then say nothing about the job.
            quiet.setLevel(logging.CRITICAL)
            cluster.close()
            quiet.setLevel(level)
        return
    try:
        client = Client(address, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise ClusterError(f"Dask scheduler {address} did not answer within {timeout:g} s "
                           f"({' '.join(str(exc).split())[:200]}); nothing was written") from exc
    try:
        workers = len(client.scheduler_info().get("workers", {}))
        log.info("connected to the Dask scheduler %s (%d workers now)", address, workers)
        yield client
    finally:
        client.close()


def peak_rss_bytes() -> int:
    """The calling process's peak resident memory so far (what a task reports back, so a
    run can say how much memory its workers needed)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB
