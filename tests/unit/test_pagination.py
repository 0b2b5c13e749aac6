"""Opaque list cursors and the page body."""

from __future__ import annotations

import base64
import uuid

import pytest

from smartsvc.errors import InvalidInput
from smartsvc.http.pagination import decode_cursor, encode_cursor, page_body
from smartsvc.ids import new_id
from smartsvc.services.pagination import Page


def test_a_cursor_round_trips_the_id():
    after = new_id()

    cursor = encode_cursor(after)

    assert decode_cursor(cursor) == after
    assert str(after) not in cursor  # opaque, URL-safe, no padding
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@pytest.mark.parametrize("cursor", [None, ""])
def test_no_cursor_starts_at_the_beginning(cursor):
    assert decode_cursor(cursor) is None


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage!",
        "%%%",
        "abc",
        base64.urlsafe_b64encode(b"\x02" + uuid.uuid4().bytes).decode(),  # unknown version
        base64.urlsafe_b64encode(b"\x01" + b"short").decode(),
        str(uuid.uuid4()),
    ],
)
def test_a_cursor_we_did_not_issue_is_invalid_input_naming_cursor(cursor):
    with pytest.raises(InvalidInput) as excinfo:
        decode_cursor(cursor)

    assert excinfo.value.status == 422
    assert list(excinfo.value.errors) == ["cursor"]


def test_page_body_has_items_and_a_cursor_only_when_more_follow():
    last = new_id()

    more = page_body(Page(items=[1, 2], next_after=last), lambda item: item * 10)
    final = page_body(Page(items=[3], next_after=None))

    assert more == {"items": [10, 20], "next_cursor": encode_cursor(last)}
    assert final == {"items": [3], "next_cursor": None}
