"""Fixtures of the service tests: the service module (imported once the champion exists),
valid request bodies, and one real `bentoml serve` (2 workers) shared by the HTTP tests."""

from __future__ import annotations

import pytest

from tests.servers import SERVICE, request_bodies, start_server


@pytest.fixture(scope="session")
def service_module(trained_entry):
    """service.service resolves the champion when imported: only import it once one exists."""
    import service.service as module

    assert module.served.entry.tag == trained_entry.tag
    return module


@pytest.fixture(scope="session")
def client(service_module):
    """The service's ASGI app in-process, built and started once per session: BentoML registers
    its metrics when it builds an app (a second build fails with "Duplicated timeseries"), and
    its batching dispatcher belongs to the event loop of the first client that ran it."""
    from starlette.testclient import TestClient

    with TestClient(service_module.ChurnService.to_asgi(), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="session")
def bodies(trained_entry) -> list[dict]:
    return request_bodies(trained_entry, 200)


@pytest.fixture(scope="module")
def server(trained_entry, tmp_path_factory):
    """One real 2-worker server for a test module; SIGTERM (graceful) at the end."""
    running = start_server(SERVICE, tmp_path_factory.mktemp("serve"))
    yield running
    running.stop()
