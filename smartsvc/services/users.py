"""User use cases: create, issue tokens, read and update the profile."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..credentials import AccessTokens
from ..db import Database
from ..errors import Conflict, InvalidInput, NotFound
from ..models import User
from ..timeutil import is_valid_time_zone, utcnow
from .pagination import Page, keyset_page

PROFILE_FIELDS = ("time_zone", "locale", "quiet_hours", "max_pushes_per_day")


@dataclass(frozen=True)
class IssuedToken:
    """An access token for a user and how long it lives."""

    user: User
    access_token: str
    expires_in: int


def _check_time_zone(value: str) -> None:
    if not is_valid_time_zone(value):
        raise InvalidInput("time_zone", f"'{value}' is not an IANA time zone such as 'Europe/Berlin'")


def create_user(
    database: Database, tokens: AccessTokens, *, external_id: str, time_zone: str, locale: str | None
) -> IssuedToken:
    """Create a user and return a first access token; 409 if the external id exists."""
    _check_time_zone(time_zone)
    with database.unit_of_work() as uow:
        assert uow.session is not None
        if uow.session.scalar(select(User.id).where(User.external_id == external_id)) is not None:
            raise Conflict(
                f"a user with external_id '{external_id}' already exists; "
                "find it with GET /v1/users?external_id= and ask for a token",
                errors={"external_id": ["already exists"]},
            )
        user = User(external_id=external_id, time_zone=time_zone, locale=locale)
        uow.session.add(user)
        try:
            uow.commit()
        except IntegrityError:
            raise Conflict(
                f"a user with external_id '{external_id}' already exists",
                errors={"external_id": ["already exists"]},
            ) from None
    return IssuedToken(user=user, access_token=tokens.issue(user.id, user.token_generation), expires_in=tokens.ttl_s)


def issue_token(database: Database, tokens: AccessTokens, user_id: uuid.UUID) -> IssuedToken:
    """A fresh access token for an existing user."""
    user = get_user(database, user_id)
    return IssuedToken(user=user, access_token=tokens.issue(user.id, user.token_generation), expires_in=tokens.ttl_s)


def get_user(database: Database, user_id: uuid.UUID) -> User:
    """A user by id, or 404."""
    with database.session() as session:
        user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id} does not exist")
    return user


def list_users(
    database: Database, *, external_id: str | None, limit: int, cursor: uuid.UUID | None
) -> Page[User]:
    """Users in creation order, optionally the one with ``external_id``."""
    query = select(User)
    if external_id is not None:
        query = query.where(User.external_id == external_id)
    with database.session() as session:
        return keyset_page(session, query, User.id, limit=limit, after=cursor)


def update_profile(database: Database, user_id: uuid.UUID, changes: dict[str, Any]) -> User:
    """Apply a partial update of the profile (``PATCH /v1/me``)."""
    if "time_zone" in changes:
        _check_time_zone(changes["time_zone"])
    with database.unit_of_work() as uow:
        assert uow.session is not None
        user = uow.session.get(User, user_id)
        if user is None:
            raise NotFound(f"user {user_id} does not exist")
        for field_name, value in changes.items():
            if field_name == "quiet_hours":
                user.quiet_hours_start = value["start"] if value else None
                user.quiet_hours_end = value["end"] if value else None
            else:
                setattr(user, field_name, value)
        user.updated_at = utcnow()
        uow.commit()
    return user
