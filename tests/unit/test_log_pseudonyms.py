"""User ids never reach the process log in clear: it cannot be rewritten when a user is erased (TRUST.md)."""

from __future__ import annotations

import io
import json
import logging
import uuid

from smartsvc.logging_setup import JsonFormatter, PseudonymFilter, user_pseudonym

KEY = "unit-test-secret-0123456789abcdef0123456789"


def _logged(**extra) -> dict:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(PseudonymFilter(KEY))
    logger = logging.getLogger(f"test.pseudonyms.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.addHandler(handler)
    logger.warning("something", extra=extra)
    return json.loads(stream.getvalue())


def test_a_user_principal_and_a_user_id_field_are_written_as_the_same_pseudonym():
    user_id = uuid.uuid4()

    line = _logged(principal=f"user:{user_id}", user_id=str(user_id))

    assert line["principal"] == line["user_id"] == user_pseudonym(KEY, user_id)
    assert str(user_id) not in json.dumps(line)


def test_an_api_key_principal_is_kept_as_it_is():
    key_id = uuid.uuid4()

    assert _logged(principal=f"key:{key_id}")["principal"] == f"key:{key_id}"


def test_pseudonyms_are_stable_per_key_and_tell_users_apart():
    first, second = uuid.uuid4(), uuid.uuid4()

    assert user_pseudonym(KEY, first) == user_pseudonym(KEY, str(first))
    assert user_pseudonym(KEY, first) != user_pseudonym(KEY, second)
    assert user_pseudonym(KEY, first) != user_pseudonym("another-key-0123456789abcdef0123456789", first)


def test_pseudonyms_stay_right_for_many_users_once_the_kept_ones_are_dropped(monkeypatch):
    import smartsvc.logging_setup as logging_setup

    monkeypatch.setattr(logging_setup, "_PSEUDONYMS_MAX", 3)
    pseudonyms = PseudonymFilter(KEY)
    users = [uuid.uuid4() for _ in range(8)]
    for _ in range(2):  # the second round meets users both kept and dropped
        for user_id in users:
            record = logging.makeLogRecord({"principal": f"user:{user_id}", "user_id": str(user_id)})
            pseudonyms.filter(record)
            assert record.principal == record.user_id == user_pseudonym(KEY, user_id)
    assert len(pseudonyms._known) <= 3
    assert PseudonymFilter("another-key-0123456789abcdef0123456789")._pseudonym(str(users[0])) != user_pseudonym(
        KEY, users[0])
