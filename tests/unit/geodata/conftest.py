"""Helpers for the geodata unit tests: fixture files and readers over them."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from tests.support.data import PORTLAND_CURBLR
from geodata.readers import FeatureResult, ReadOptions, Reader, open_reader

FIXTURES = Path(__file__).parent / "fixtures"
# The real feed, copied into the repository so a clean clone needs nothing else.
PORTLAND = PORTLAND_CURBLR


class OneWayStream(io.RawIOBase):
    """A non-seekable byte stream that remembers how far it has been read."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)
        self.size = len(data)

    def readable(self) -> bool:
        return True

    @property
    def consumed(self) -> int:
        return self._data.tell()

    def readinto(self, buffer) -> int:  # type: ignore[override]
        chunk = self._data.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def read_all(name: str, fmt: str | None = None, **options) -> tuple[Reader, list[FeatureResult]]:
    """Read a fixture file completely; returns the reader (for its stats/metadata) and the results."""
    with open(FIXTURES / name, "rb") as fp:
        reader = open_reader(fp, fmt, ReadOptions(**options))
        return reader, list(reader)


def by_id(results: list[FeatureResult]) -> dict[str, FeatureResult]:
    return {r.feature_id: r for r in results}


@pytest.fixture(scope="session")
def portland_path() -> Path:
    if not PORTLAND.exists():
        pytest.fail(f"the real CurbLR feed is missing: {PORTLAND}")
    return PORTLAND
