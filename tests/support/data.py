"""Paths of the real data files the tests read (kept in tests/data so a clean clone has them)."""

from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data"
#: The real CurbLR 1.1 feed of downtown Portland (416 segments, America/Los_Angeles).
PORTLAND_CURBLR = DATA / "curblr" / "portland-downtown-2020-07-30.curblr.json"
