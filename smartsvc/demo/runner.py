"""``smartsvc demo``: run the scenario's steps against a fresh service and tell them as they happen."""

from __future__ import annotations

import logging
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from rich.console import Console

from ..timeutil import simulated_clock
from . import scenario, steps
from .narration import Narrator
from .world import SimulatedClock, World

# The operator's preparations happen half an hour before the drivers set off.
PREPARATION_LEAD = timedelta(minutes=30)


@dataclass(frozen=True)
class DemoResult:
    """Where the demo's files are (gone afterwards unless a var dir was given) and the two trips."""

    var_dir: Path
    pushes_path: Path
    small: steps.Trip
    long: steps.Trip


def run_demo(console: Console, var_dir: Path | None = None) -> DemoResult:
    """Run the flagship scenario on a fresh service in ``var_dir`` (default: a temporary folder, removed after).

    Raises :class:`~smartsvc.demo.world.DemoFailed` when the service does not do what the story says.
    """
    with ExitStack() as stack:
        kept = var_dir is not None
        root = var_dir if var_dir is not None else Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="smartsvc-demo-"))) / "var"
        clock = SimulatedClock(scenario.TRIP_START - PREPARATION_LEAD)
        stack.enter_context(simulated_clock(clock))
        _quiet_libraries()
        world = World.create(root, clock)
        stack.callback(world.close)
        narrator = Narrator(console)
        narrator.opening(root.resolve())

        setup = steps.set_up_operator(world)
        narrator.imported(steps.load_parking_data(world, setup.operator))
        narrator.operator_setup(setup)

        lena = steps.sign_up(world, setup, scenario.LENA)
        max_ = steps.sign_up(world, setup, scenario.MAX)
        narrator.driver(lena, pronoun="her")
        small, long = steps.drive(world, [lena, max_])
        narrator.trip(small, subject="She", pronoun="her")
        narrator.push(small, world.settings.pushes_log_path)
        narrator.why(small)
        narrator.spots(small, pronoun="her")
        difference = steps.compare(small, long)
        narrator.second_driver(long, difference, max_)
        narrator.replayed(steps.replay(world, lena), lena.driver.name)
        narrator.files(steps.where_things_are(world), kept)
        result = DemoResult(root, world.settings.pushes_log_path, small, long)
    return result


def _quiet_libraries() -> None:
    # Alembic announces each migration at INFO; the demo's reader wants the story, not the schema.
    logging.getLogger("alembic").setLevel(logging.WARNING)
