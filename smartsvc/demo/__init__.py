"""``smartsvc demo``: the flagship scenario end to end on local data, narrated.

- :mod:`.scenario` — the facts: place, time, drivers, cars, rules (chosen from the data);
- :mod:`.world` — a fresh service on a throwaway var dir, its API, its outbox run inline;
- :mod:`.steps` — the steps through the real service paths, returning what happened;
- :mod:`.narration` — telling it in plain words;
- :mod:`.runner` — the steps in order, told as they happen;
- ``data/`` — the real Portland CurbLR feed the operator uploads.
"""
