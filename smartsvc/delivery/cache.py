"""The per-process cache of push providers, and their closing.

One provider per configuration and process keeps its connections and its
tokens (OAuth, APNs JWT, VAPID) across tasks. Entries are keyed by the
process id as well: a forked worker never uses (or closes) its parent's
sockets. Closing a provider only closes its connections; it stays cached and
opens new ones when used again, so its signed tokens survive (APNs refuses
frequent token refreshes).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Hashable
from typing import Any, Generic, Protocol, TypeVar

from ..config import ConfigError


class Closable(Protocol):
    """A provider with connections to close."""

    def close(self) -> None:
        """Close the connections (a later use opens new ones)."""
        ...


P = TypeVar("P", bound=Closable)
# Every provider cache, so that process exit reaches them all (close_every_provider).
_CACHES: list["ProviderCache[Any]"] = []


class ProviderCache(Generic[P]):
    """At most ``limit`` providers per process, by configuration key; the oldest is closed and dropped beyond."""

    def __init__(self, limit: int = 8) -> None:
        self._limit = limit
        self._providers: dict[tuple[int, Hashable], P] = {}
        self._lock = threading.Lock()
        _CACHES.append(self)

    def get(self, key: Hashable, build: Callable[[], P]) -> P:
        """The provider of ``key`` in this process, built by ``build`` on first use."""
        pid, dropped = os.getpid(), []
        with self._lock:
            provider = self._providers.get((pid, key))
            if provider is None:
                while len(self._providers) >= self._limit:  # settings changed a lot (tests): drop the oldest
                    oldest = next(iter(self._providers))
                    dropped.append((oldest[0], self._providers.pop(oldest)))
                provider = self._providers[(pid, key)] = build()
        for owner, old in dropped:
            if owner == pid:  # a parent's provider (inherited by fork) holds the parent's sockets: left alone
                old.close()
        return provider

    def close(self, key: Hashable) -> None:
        """Close the connections of this process's provider of ``key``, if there is one."""
        with self._lock:
            provider = self._providers.get((os.getpid(), key))
        if provider is not None:
            provider.close()

    def close_configured(self, key_of: Callable[[], Hashable | None]) -> None:
        """Close the provider of the configuration ``key_of()`` reads; nothing when none is configured or the
        configuration became unreadable (a key file gone: :func:`close_every_provider` still reaches it)."""
        try:
            key = key_of()
        except ConfigError:
            return
        if key is not None:
            self.close(key)

    def close_all(self) -> None:
        """Close the connections of every provider this process built."""
        pid = os.getpid()
        with self._lock:
            providers = [provider for (owner, _key), provider in self._providers.items() if owner == pid]
        for provider in providers:
            provider.close()


def close_every_provider() -> None:
    """Close the connections of every provider this process built, in every cache (at exit)."""
    for cache in list(_CACHES):
        cache.close_all()
