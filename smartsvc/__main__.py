"""``python -m smartsvc`` is the ``smartsvc`` command."""

from .cli import main

main()
