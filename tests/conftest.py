"""Shared fixtures: one local Ray per test session, offline."""

from __future__ import annotations

import os

import pytest

# A local dashboard would turn token auth on; tests talk to no dashboard.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray shared by every test of the session (2 CPUs, dashboard on a free port)."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",  # a Ray of the tests' own, never another one running on this machine
            num_cpus=2,
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            dashboard_port=free_port(),
            namespace="curation-tests",
            object_store_memory=200 * 1024 * 1024,
            log_to_driver=False,
        )
    yield ray
    # Left running for the rest of the session; shut down at exit.


def pytest_sessionfinish(session, exitstatus):
    try:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    except ImportError:
        pass


@pytest.fixture
def progress_moves(monkeypatch) -> list[tuple[str, int, int | None]]:
    """``(label, done, total)`` of every progress move the driver makes from here on."""
    from curation.runner.progress import Progress

    moves: list[tuple[str, int, int | None]] = []

    class Recorder(Progress):
        def advance_to(self, n, total=None):
            moves.append((self.label, n, total))
            super().advance_to(n, total)

    monkeypatch.setattr("curation.runner.driver.Progress", Recorder)
    return moves
