"""Uploaded files waiting for their import, in the folder the API and the workers share.

A file is streamed to ``<name>.part`` and renamed to ``<name>`` once complete,
so a reader never sees half a file; past the size limit the partial file is
removed and nothing is left behind. Names (not paths) are stored in the
database, so API and workers may mount the shared folder at different paths.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable

from ..errors import PayloadTooLarge

log = logging.getLogger(__name__)

CHUNK = 1 << 20
SUFFIX = ".upload"
PARTIAL_SUFFIX = ".part"
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,100}\.upload$")


@dataclass(frozen=True)
class StoredUpload:
    """A complete upload: its name in the upload folder and its size in bytes."""

    name: str
    size: int


def upload_name(key: str) -> str:
    """The file name an upload with ``key`` (a dataset id) is stored under."""
    return f"{key}{SUFFIX}"


def path_of(folder: Path, name: str) -> Path:
    """The path of a stored upload; refuses anything that is not a name this module made."""
    if not _NAME.match(name):
        raise ValueError(f"not an upload name: {name!r}")
    return folder / name


def save(folder: Path, key: str, stream: BinaryIO, *, max_bytes: int | None) -> StoredUpload:
    """Copy ``stream`` into ``folder`` in chunks; :class:`PayloadTooLarge` past ``max_bytes``.

    Nothing is left behind when the copy fails for any reason.
    """
    folder.mkdir(parents=True, exist_ok=True)
    name = upload_name(key)
    final = path_of(folder, name)
    partial = final.with_name(name + PARTIAL_SUFFIX)
    size = 0
    try:
        with open(partial, "xb") as out:
            while chunk := stream.read(CHUNK):
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    message = f"the file is larger than the upload limit of {max_bytes:,} bytes"
                    raise PayloadTooLarge(message, errors={"file": [message]})
                out.write(chunk)
            out.flush()
            # The database row that points at the file commits next: the bytes must be on disk first.
            os.fsync(out.fileno())
        os.replace(partial, final)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return StoredUpload(name, size)


def remove(folder: Path, name: str | None) -> None:
    """Delete a stored upload if it is still there (best effort: a leftover is purged later)."""
    if not name:
        return
    try:
        path_of(folder, name).unlink(missing_ok=True)
    except (OSError, ValueError) as exc:
        log.warning("could not remove an upload", extra={"upload": name, "error": str(exc)})


def stale_files(folder: Path, keep: Iterable[str], older_than_s: float) -> list[Path]:
    """Files in ``folder`` older than ``older_than_s`` that are not in ``keep`` (upload names).

    Partial files of uploads that never completed count as stale too.
    """
    if not folder.is_dir():
        return []
    wanted = set(keep)
    cutoff = time.time() - older_than_s
    stale = []
    for entry in os.scandir(folder):
        if not entry.is_file(follow_symlinks=False) or entry.name in wanted:
            continue
        if not (entry.name.endswith(SUFFIX) or entry.name.endswith(SUFFIX + PARTIAL_SUFFIX)):
            continue  # not ours (an operator's own file in a shared folder)
        try:
            if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                stale.append(Path(entry.path))
        except FileNotFoundError:
            continue
    return stale
