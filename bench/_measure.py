"""``python -S bench/_measure.py RESULT.json ARGV...``: run ARGV, write its exit code, wall time and peak RSS.

Why a separate small process: Linux counts in a child's ``ru_maxrss`` the
memory of the process it was forked from, up to its ``exec`` — a child of a
benchmark process holding a million-spot index would "peak" at the index's
size. Forked from this tiny interpreter (stdlib only, run with ``-S``), the
command's ``ru_maxrss`` (from ``wait4``) is its own.
"""

import json
import os
import subprocess
import sys
import time


def main() -> int:
    result_path, argv = sys.argv[1], sys.argv[2:]
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    with open(result_path, "w") as fp:
        # ru_maxrss is in KiB on Linux.
        json.dump({"returncode": code, "wall_s": wall, "max_rss_bytes": usage.ru_maxrss * 1024}, fp)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
