"""One place that wires the service's parts together from settings."""

from __future__ import annotations

import atexit
import threading
from dataclasses import dataclass, field

from .config import Settings
from .credentials import AccessTokens
from .db import Database
from .delivery import close_all_providers, close_providers
from .services.collections import DatasetExtents
from .services.geofence_tracking import GeofenceTracker
from .services.journal_buffer import SearchJournal
from .services.rule_set import RuleCache
from .services.schedule import ScheduleMemo
from .services.spot_query import SpotFinder
from .services.spots import build_spot_finder


@dataclass
class Container:
    """The long-lived parts one process shares: settings, database, token signer, geodata caches."""

    settings: Settings
    database: Database
    tokens: AccessTokens
    # Spot search: the in-process index of the live parking layer (kept current per process) or PostGIS.
    spot_finder: SpotFinder
    dataset_extents: DatasetExtents = field(default_factory=DatasetExtents)
    # Geofence events: this process's index of the enabled geofences (kept current) and users' fence state.
    geofence_tracker: GeofenceTracker = field(default_factory=GeofenceTracker)
    # Rules: this process's cache of the enabled rules (reloaded when one changes).
    rule_cache: RuleCache = field(default_factory=RuleCache)
    # Scheduler: the (rule, time zone, local date) slots this process found done today.
    schedule_memo: ScheduleMemo = field(default_factory=ScheduleMemo)
    # Journal: this process's spot searches not yet written (written in batches, off the hot path).
    search_journal: SearchJournal = field(default_factory=SearchJournal)

    def close(self) -> None:
        """Close what this container's parts hold open: the spot searches not yet in the journal (written
        first, while the database is there), the push providers' connections, the database pool.

        Idempotent. Nothing is made unusable: a provider or the database used afterwards opens new
        connections (and needs closing again).
        """
        self.search_journal.flush()
        close_providers(self.settings)
        self.database.engine.dispose()


_exit_hook_lock = threading.Lock()
_exit_hook_registered = False


def _close_providers_at_exit() -> None:
    """Make sure the push providers' kept-alive connections are closed when the process exits."""
    global _exit_hook_registered
    with _exit_hook_lock:
        if not _exit_hook_registered:
            atexit.register(close_all_providers)
            _exit_hook_registered = True


def build_container(settings: Settings) -> Container:
    """Build the parts for ``settings`` (nothing connects until first use; push connections close at exit)."""
    _close_providers_at_exit()
    return Container(
        settings=settings,
        database=Database(settings),
        tokens=AccessTokens(settings.secret_key, settings.access_token_ttl_s),
        spot_finder=build_spot_finder(settings),
    )
