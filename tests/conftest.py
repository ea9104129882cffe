"""Shared fixtures. Real data is read in place from ../shared/data (never copied into the repo)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a hub lookup must fail at once, never wait on the network
# the converted cl100k tokenizer.json goes to a cache of the test session, not the user's ~/.cache (the Ray
# workers and CLI subprocesses inherit it, so one conversion serves the whole session)
_CACHE = None if "CURATE_CACHE_DIR" in os.environ else tempfile.mkdtemp(prefix="curate-test-cache-")
os.environ.setdefault("CURATE_CACHE_DIR", _CACHE or "")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CURATE_SHARED_DATA", REPO.parent / "shared" / "data"))


def pytest_configure(config: pytest.Config) -> None:
    """Missing real data fails the run at once: tests parametrized over its files would otherwise collect
    nothing and pass silently."""
    if not SHARED_DATA.is_dir():
        raise pytest.UsageError(f"shared test data not found at {SHARED_DATA} (set CURATE_SHARED_DATA): the tests "
                                "read real crawl data from there")


def pytest_unconfigure(config: pytest.Config) -> None:
    if _CACHE:
        shutil.rmtree(_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared test data not found at {SHARED_DATA}: the tests read real crawl data from there")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ray_session():
    """One embedded Ray for every end-to-end test of the session (starting Ray costs seconds)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", object_store_memory=200 << 20,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}})
    yield ray
    ray.shutdown()
