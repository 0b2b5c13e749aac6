"""``smartsvc demo``: the flagship scenario on a fresh, throwaway service, told step by step."""

from __future__ import annotations

import time
from pathlib import Path

import click


@click.command("demo")
@click.option("--var-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep the demo's database and pushes.jsonl here (must be empty or new) "
                   "[default: a temporary folder, removed at the end]")
def demo(var_dir: Path | None) -> None:
    """The flagship scenario end to end on local data, narrated (no network, never touches ./var)."""
    from rich.console import Console

    from ..demo.runner import run_demo
    from ..demo.world import DemoFailed

    if var_dir is not None and var_dir.exists() and any(var_dir.iterdir()):
        raise click.ClickException(f"{var_dir} is not empty: the demo needs a fresh folder")
    console = Console(highlight=False, width=None if Console().is_terminal else 132)
    started = time.monotonic()
    try:
        run_demo(console, var_dir)
    except DemoFailed as exc:
        raise click.ClickException(f"the demo failed: {exc}") from None
    console.print(f"\ndone in {time.monotonic() - started:.1f} s", style="dim")
