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
def asgi_app(service_module):
    """The service's ASGI app, built once: BentoML registers its metrics when it builds one,
    and a second build in the same process fails with "Duplicated timeseries"."""
    return service_module.ChurnService.to_asgi()


@pytest.fixture(scope="session")
def bodies(trained_entry) -> list[dict]:
    return request_bodies(trained_entry, 200)


@pytest.fixture(scope="module")
def server(trained_entry, tmp_path_factory):
    """One real 2-worker server for a test module; SIGTERM (graceful) at the end."""
    running = start_server(SERVICE, tmp_path_factory.mktemp("serve"))
    yield running
    running.stop()
