"""Starting the ``smartsvc`` command line does not import what only a few commands need.

Every CLI process (benchmarks and tests start many) pays for what ``import smartsvc.cli``
imports; these packages are imported where they are used instead.
"""

from __future__ import annotations

import json
import subprocess
import sys

# geoalchemy2 (with shapely and numpy) only for migrations; alembic only when a command touches
# the schema; Flask only once a command builds the app; rich only for demo and import output.
DEFERRED = ("geoalchemy2", "shapely", "numpy", "alembic", "flask", "rich")

_PROBE = (
    "import json, sys\n"
    "import smartsvc.cli\n"
    f"print(json.dumps(sorted(name for name in {DEFERRED!r} if name in sys.modules)))\n"
)


def _imported_by_the_cli() -> list[str]:
    """The DEFERRED packages that ``import smartsvc.cli`` loads in a fresh interpreter."""
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_the_cli_leaves_the_heavy_packages_alone():
    assert _imported_by_the_cli() == []


def test_migrating_still_teaches_sqlalchemy_the_postgis_types(tmp_path):
    # Reflecting the PostGIS ``geog`` column needs geoalchemy2's types: running the migrations loads it.
    probe = (
        "import sys\n"
        "from pathlib import Path\n"
        "from smartsvc.config import Settings\n"
        "from smartsvc.db import Database\n"
        "from smartsvc.migrate import upgrade\n"
        "var = Path(sys.argv[1])\n"
        "database = Database(Settings(var_dir=var, database_url=f'sqlite:///{var / \"probe.db\"}'))\n"
        "before = 'geoalchemy2' in sys.modules\n"
        "upgrade(database)\n"
        "database.engine.dispose()\n"
        "print(before, 'geoalchemy2' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.split() == ["False", "True"]
