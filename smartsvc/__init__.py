"""smartsvc: a context-aware smart-service backend."""


def create_app(*args, **kwargs):  # type: ignore[no-untyped-def]
    """Build the Flask app (see :func:`smartsvc.app.create_app`)."""
    from .app import create_app as factory

    return factory(*args, **kwargs)
