"""The files ``smartsvc demo`` ships (package data, so an installed package has them)."""

from pathlib import Path

#: The real CurbLR 1.1 feed of downtown Portland (416 curb segments, America/Los_Angeles).
PORTLAND_FEED = Path(__file__).resolve().parent / "portland-downtown-2020-07-30.curblr.json"
