"""Every task of the service; importing this package registers them."""

from . import datasets, maintenance, outbox, telemetry  # noqa: F401
