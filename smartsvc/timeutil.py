"""Clock and time-zone helpers shared by the use cases."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Callable, Iterator
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

# Set only inside ``simulated_clock`` (``smartsvc demo`` replays a scenario at a fixed date).
_simulated: Callable[[], datetime] | None = None


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC (the simulated time inside :func:`simulated_clock`)."""
    if _simulated is not None:
        return _simulated()
    return datetime.now(timezone.utc)


@contextmanager
def simulated_clock(clock: Callable[[], datetime]) -> Iterator[None]:
    """Make :func:`utcnow` answer ``clock()`` (an aware datetime) in this process until the block ends.

    Every use case reads "now" through :func:`utcnow`, so a scenario replayed
    at a fixed date sees one consistent time: the events' ``at``, the spot
    search at the ETA, the attention budget, expiries and the outbox. Not for
    servers: it changes the clock of the whole process.
    """
    global _simulated
    previous, _simulated = _simulated, clock
    try:
        yield
    finally:
        _simulated = previous


def is_valid_time_zone(name: str) -> bool:
    """True when ``name`` is an IANA time zone this machine knows."""
    if not name or name not in _zone_names():
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


_ZONES: set[str] | None = None


def _zone_names() -> set[str]:
    global _ZONES
    if _ZONES is None:
        _ZONES = available_timezones() | {"UTC"}
    return _ZONES
