"""Shared fixtures: where the project's reference data lives, and skipping cleanly without it."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ECGFM_SHARED", REPO.parent / "shared"))


def _shared_subdir(name: str) -> Path:
    path = SHARED / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent (a fresh clone without ../shared); reference data not available")
    return path


@pytest.fixture(scope="session", autouse=True)
def private_ecgfm_cache(tmp_path_factory):
    """Hashes and converted weights go to a temporary cache, not the user's (subprocesses inherit it)."""
    previous = os.environ.get("ECGFM_CACHE")
    os.environ["ECGFM_CACHE"] = str(tmp_path_factory.mktemp("ecgfm-cache"))
    yield
    if previous is None:
        os.environ.pop("ECGFM_CACHE", None)
    else:
        os.environ["ECGFM_CACHE"] = previous


@pytest.fixture(scope="session")
def conformance_dir() -> Path:
    return _shared_subdir("conformance")


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    return _shared_subdir("ecg-samples")
