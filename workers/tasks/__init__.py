"""Every task of the service; importing this package registers them."""

from . import datasets, maintenance, outbox, telemetry  # noqa: F401
from . import delivery, suggestions  # noqa: F401
from . import geofence_timer  # noqa: F401
from . import engine, schedule  # noqa: F401
from . import webhooks  # noqa: F401
from . import erasure  # noqa: F401
