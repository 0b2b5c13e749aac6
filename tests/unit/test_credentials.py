"""API keys and signed user access tokens, without a database."""

from __future__ import annotations

import hashlib
import time
import uuid

import pytest
from itsdangerous import TimestampSigner

from smartsvc.credentials import (
    ACCESS_TOKEN_PREFIX,
    API_KEY_PREFIX,
    VERIFIED_KEEP_S,
    AccessTokens,
    InvalidToken,
    generate_api_key,
    hash_api_key,
)

SECRET = "unit-test-secret-0123456789abcdef0123456789"


def test_a_token_round_trips_user_and_generation():
    tokens = AccessTokens(SECRET, ttl_s=3600)
    user_id = uuid.uuid4()

    token = tokens.issue(user_id, generation=3)
    claims = tokens.verify(token)

    assert token.startswith(ACCESS_TOKEN_PREFIX)
    assert claims.user_id == user_id
    assert claims.generation == 3


def _tamper(token: str, index: int) -> str:
    replacement = "A" if token[index] != "A" else "B"
    return token[:index] + replacement + token[index + 1:]


@pytest.mark.parametrize("where", ["payload", "signature"])
def test_a_tampered_token_is_refused(where):
    tokens = AccessTokens(SECRET, ttl_s=3600)
    token = tokens.issue(uuid.uuid4(), generation=0)
    index = len(ACCESS_TOKEN_PREFIX) + 2 if where == "payload" else len(token) - 3

    with pytest.raises(InvalidToken, match="invalid"):
        tokens.verify(_tamper(token, index))


def test_a_token_signed_with_another_secret_is_refused():
    token = AccessTokens("another-secret-0123456789abcdef0123456789", ttl_s=3600).issue(uuid.uuid4(), 0)

    with pytest.raises(InvalidToken, match="invalid"):
        AccessTokens(SECRET, ttl_s=3600).verify(token)


def test_an_expired_token_is_refused_as_expired(monkeypatch):
    tokens = AccessTokens(SECRET, ttl_s=60)
    issued_at = int(time.time()) - 61
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: issued_at)
    token = tokens.issue(uuid.uuid4(), 0)
    monkeypatch.undo()

    with pytest.raises(InvalidToken, match="expired"):
        tokens.verify(token)


def test_a_token_just_inside_its_lifetime_is_accepted(monkeypatch):
    tokens = AccessTokens(SECRET, ttl_s=60)
    issued_at = int(time.time()) - 50
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: issued_at)
    token = tokens.issue(uuid.uuid4(), 0)
    monkeypatch.undo()

    assert tokens.verify(token).generation == 0


def test_a_token_accepted_once_is_refused_once_it_expires(monkeypatch):
    tokens = AccessTokens(SECRET, ttl_s=60)
    issued_at = int(time.time()) - 50
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: issued_at)
    token = tokens.issue(uuid.uuid4(), 0)
    monkeypatch.undo()
    assert tokens.verify(token).generation == 0  # the process now knows this token

    later = time.time() + 11
    monkeypatch.setattr(time, "time", lambda: later)
    with pytest.raises(InvalidToken, match="expired"):
        tokens.verify(token)


def test_a_tampered_copy_of_a_known_token_is_still_refused():
    tokens = AccessTokens(SECRET, ttl_s=3600)
    token = tokens.issue(uuid.uuid4(), 3)
    assert tokens.verify(token).generation == 3

    with pytest.raises(InvalidToken):
        tokens.verify(token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1])


@pytest.mark.parametrize("token", ["", "ssk_abc", "sat_", "sat_not.a.token", "Bearer sat_x"])
def test_garbage_is_not_a_token(token):
    with pytest.raises(InvalidToken):
        AccessTokens(SECRET, ttl_s=3600).verify(token)


def test_an_api_key_is_random_prefixed_and_stored_only_as_its_hash():
    first, second = generate_api_key(), generate_api_key()

    assert first.plaintext.startswith(API_KEY_PREFIX)
    assert first.plaintext != second.plaintext
    assert first.prefix == first.plaintext[:12]
    assert first.key_hash == hashlib.sha256(first.plaintext.encode()).hexdigest()
    assert first.plaintext not in first.key_hash
    assert len(first.plaintext) >= 40  # 256 random bits


def test_the_key_hash_is_deterministic_and_tells_keys_apart():
    assert hash_api_key("ssk_a") == hash_api_key("ssk_a")
    assert hash_api_key("ssk_a") != hash_api_key("ssk_b")


def test_a_verified_token_is_forgotten_a_minute_after_its_last_check(monkeypatch):
    # The cache holds user ids; an erased user must leave the caches of every process, even one that never
    # sees the token again (TRUST.md "Erasure").
    tokens = AccessTokens(SECRET, ttl_s=3600)
    quiet_user, other_user = uuid.uuid4(), uuid.uuid4()
    tokens.verify(tokens.issue(quiet_user, 0))
    assert tokens.cached_user_ids() == {quiet_user}

    later = time.time() + VERIFIED_KEEP_S + 1
    monkeypatch.setattr(time, "time", lambda: later)
    tokens.verify(tokens.issue(other_user, 0))  # any later request sweeps

    assert tokens.cached_user_ids() == {other_user}


def test_a_token_still_valid_after_a_minute_is_checked_again_and_kept(monkeypatch):
    tokens = AccessTokens(SECRET, ttl_s=3600)
    token = tokens.issue(uuid.uuid4(), 4)
    tokens.verify(token)

    later = time.time() + VERIFIED_KEEP_S + 1
    monkeypatch.setattr(time, "time", lambda: later)

    assert tokens.verify(token).generation == 4


def test_forgetting_a_user_drops_all_their_tokens_and_no_one_elses():
    tokens = AccessTokens(SECRET, ttl_s=3600)
    erased, kept = uuid.uuid4(), uuid.uuid4()
    for generation in (0, 1):
        tokens.verify(tokens.issue(erased, generation))
    tokens.verify(tokens.issue(kept, 0))

    tokens.forget_user(erased)

    assert tokens.cached_user_ids() == {kept}
