"""A push fits in 4 KB once encoded: the body is trimmed first, the title only if it must, never the ids."""

from __future__ import annotations

import json
import random
import uuid
from datetime import datetime, timezone
from pathlib import Path

from smartsvc.config import Settings
from smartsvc.delivery import MAX_PAYLOAD_BYTES, LogProvider, PushMessage, fit_payload, provider_for
from smartsvc.delivery.message import json_size_bound

AT = datetime(2026, 11, 24, 9, 0, tzinfo=timezone.utc)


def message(title: str = "Parking near Alexanderplatz", body: str = "3 spots fit your car") -> PushMessage:
    return PushMessage(user_id=uuid.uuid4(), device_id=uuid.uuid4(), platform="fcm", suggestion_id=uuid.uuid4(),
                       kind="spots_near_destination", title=title, body=body, collapse_key="spots:trip-1",
                       expires_at=AT, at=AT, token="token")


def test_a_small_push_is_left_alone():
    original = message()
    assert fit_payload(original) is original


def test_a_long_body_is_trimmed_to_the_limit_and_keeps_the_ids():
    original = message(body="Parkplatz frei – " * 1000)  # multi-byte characters too
    fitted = fit_payload(original)
    assert fitted.encoded_size() <= MAX_PAYLOAD_BYTES
    assert fitted.encoded_size() > MAX_PAYLOAD_BYTES - 16  # trimmed no more than needed
    assert fitted.body.endswith("…") and original.body.startswith(fitted.body[:-1])
    assert (fitted.suggestion_id, fitted.user_id, fitted.device_id, fitted.collapse_key, fitted.title) == \
        (original.suggestion_id, original.user_id, original.device_id, original.collapse_key, original.title)


def test_a_huge_title_is_trimmed_once_the_body_is_gone():
    fitted = fit_payload(message(title="T" * 6000, body="B" * 6000))
    assert fitted.encoded_size() <= MAX_PAYLOAD_BYTES
    assert fitted.body == "" and fitted.title.startswith("TTT") and fitted.title.endswith("…")


def test_the_log_provider_writes_one_json_line_per_push(tmp_path: Path):
    provider = provider_for(type("Device", (), {"platform": "apns"})(), Settings(var_dir=tmp_path))
    assert isinstance(provider, LogProvider)
    first, second = message(), message(body="second")
    assert provider.send(first).ok and provider.send(second).ok
    lines = [json.loads(line) for line in (tmp_path / "pushes.jsonl").read_text().splitlines()]
    assert [line["body"] for line in lines] == ["3 spots fit your car", "second"]
    assert lines[0] == {
        "user_id": str(first.user_id), "device_id": str(first.device_id), "platform": "fcm",
        "suggestion_id": str(first.suggestion_id), "kind": "spots_near_destination",
        "title": "Parking near Alexanderplatz", "body": "3 spots fit your car", "collapse_key": "spots:trip-1",
        "at": AT.isoformat(),
    }


def test_the_log_provider_reports_a_failure_instead_of_raising(tmp_path: Path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    result = LogProvider(blocker / "pushes.jsonl").send(message())
    assert not result.ok and result.status == "failed" and "cannot write" in result.error


def _encoded(part: dict[str, str]) -> int:
    return len(json.dumps(part, ensure_ascii=False, separators=(",", ":")).encode())


def test_the_size_bound_is_never_below_the_encoded_size():
    rng = random.Random(7)
    alphabet = ["a", " ", '"', "\\", "\x1f", "\n", "é", "–", "🚗", "\u2028"]
    for _ in range(2000):
        parts = [{"".join(rng.choices(alphabet, k=rng.randrange(12))): "".join(rng.choices(alphabet, k=rng.randrange(40)))
                  for _ in range(rng.randrange(6))} for _ in range(rng.randrange(1, 3))]
        assert json_size_bound(*parts) >= sum(_encoded(part) for part in parts)
    worst = {"\x1f" * 5: "\x1f" * 9}  # each character written as \u001f: the bound is tight
    assert json_size_bound(worst) == _encoded(worst) + 1  # but for a comma the last item does not have


def test_a_push_over_the_bound_but_within_the_limit_is_measured_and_left_alone():
    original = message(body="b" * 700)  # the bound says "maybe too big" (> 4096), the encoding ~900 bytes
    assert json_size_bound(original.data()) > MAX_PAYLOAD_BYTES >= original.encoded_size()
    assert fit_payload(original) is original
