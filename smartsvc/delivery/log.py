"""The ``log`` push provider: one JSON line per push in ``var/pushes.jsonl`` (the quick start's "phone")."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .message import PushMessage, PushResult

try:  # POSIX: several worker processes append to one file
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class LogProvider:
    """Appends each push to a file, one JSON object a line; never dead tokens."""

    name = "log"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def send(self, message: PushMessage) -> PushResult:
        """Append the push as one line (``user_id``, ``device_id``, ``platform``, ``suggestion_id``, …)."""
        started = time.perf_counter()
        line = json.dumps({
            "user_id": str(message.user_id), "device_id": str(message.device_id), "platform": message.platform,
            "suggestion_id": str(message.suggestion_id), "kind": message.kind, "title": message.title,
            "body": message.body, "collapse_key": message.collapse_key, "at": message.at.isoformat(),
        }, ensure_ascii=False) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX)  # one whole line at a time, whatever its length
                data = line.encode()
                while data:
                    data = data[os.write(fd, data):]
            finally:
                os.close(fd)  # releases the lock
        except OSError as exc:
            return PushResult("failed", _elapsed_ms(started), error=f"cannot write {self.path}: {exc}")
        return PushResult("sent", _elapsed_ms(started))


def _elapsed_ms(started: float) -> int:
    return int(round((time.perf_counter() - started) * 1000))
