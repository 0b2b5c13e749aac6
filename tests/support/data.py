"""Paths of the real data files the tests read.

The Portland CurbLR feed is package data of ``smartsvc demo`` (one copy, shipped with the package);
the tests read that same file.
"""

from pathlib import Path

from smartsvc.demo.data import PORTLAND_FEED

DATA = Path(__file__).resolve().parents[1] / "data"
#: The real CurbLR 1.1 feed of downtown Portland (416 segments, America/Los_Angeles).
PORTLAND_CURBLR = PORTLAND_FEED
