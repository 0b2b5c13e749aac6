"""flask-smorest ``Api`` and ``Blueprint`` adapted to this service.

- every error is ``application/problem+json`` and documented so;
- ``Blueprint.auth(*roles)`` authenticates, checks the role and documents
  the bearer security requirement and the 401/403 answers.
"""

from __future__ import annotations

import functools
import http
from typing import Any, Callable

import marshmallow as ma
from flask import current_app, g, request
from flask_smorest import Api as _Api
from flask_smorest import Blueprint as _Blueprint
from flask_smorest.utils import prepare_response

from ..errors import PROBLEM_MIMETYPE, Forbidden, Unauthorized
from ..services.auth import USER_ROLE, Principal, authenticate
from .problems import register_problem_handlers


class ProblemSchema(ma.Schema):
    """RFC 9457 problem details."""

    type = ma.fields.String(metadata={"description": "Problem type URI"})
    title = ma.fields.String(metadata={"description": "Short summary of the problem type"})
    status = ma.fields.Integer(metadata={"description": "HTTP status code"})
    detail = ma.fields.String(metadata={"description": "What went wrong, for a person"})
    errors = ma.fields.Dict(
        keys=ma.fields.String(),
        values=ma.fields.List(ma.fields.String()),
        metadata={"description": "Messages per offending field"},
    )
    request_id = ma.fields.String(metadata={"description": "Quote it when reporting a problem"})


class Api(_Api):
    """The API extension with one error handler and problem+json docs."""

    ERROR_SCHEMA = ProblemSchema

    def _register_error_handlers(self) -> None:
        register_problem_handlers(self._app)

    def _register_responses(self) -> None:
        for status in http.HTTPStatus:
            response: dict[str, Any] = {"description": status.phrase}
            if status >= 400:
                response["schema"] = self.ERROR_SCHEMA
                prepare_response(response, self.spec, PROBLEM_MIMETYPE)
            self.spec.components.response(status.name, response, lazy=True)
        response = {"description": "Error (problem details)", "schema": self.ERROR_SCHEMA}
        prepare_response(response, self.spec, PROBLEM_MIMETYPE)
        self.spec.components.response("DEFAULT_ERROR", response, lazy=True)


def current_principal() -> Principal:
    """The caller authenticated by :meth:`Blueprint.auth`."""
    return g.principal


def current_user_id() -> Any:
    """The id of the calling user (views guarded by ``auth("user")``)."""
    user_id = g.principal.user_id
    assert user_id is not None
    return user_id


def _bearer_credential() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, credential = header.partition(" ")
    if not header:
        raise Unauthorized("missing Authorization header; send 'Authorization: Bearer <token>'")
    if scheme.lower() != "bearer" or not credential.strip():
        raise Unauthorized("Authorization header must be 'Bearer <token>'")
    return credential.strip()


class Blueprint(_Blueprint):
    """A flask-smorest blueprint that knows who may call each view."""

    def auth(self, *roles: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Require a bearer credential with one of ``roles`` (``user`` = user token)."""
        allowed = frozenset(roles)

        def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(view)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                container = current_app.extensions["smartsvc"]
                principal = authenticate(container.database, container.tokens, _bearer_credential())
                if principal.role not in allowed:
                    raise Forbidden(
                        f"this endpoint is for {' or '.join(sorted(_describe(r) for r in allowed))}; "
                        f"the credential is {_describe(principal.role)}"
                    )
                g.principal = principal
                return view(*args, **kwargs)

            wrapper = self.alt_response(401, response="UNAUTHORIZED")(wrapper)
            wrapper = self.alt_response(403, response="FORBIDDEN")(wrapper)
            wrapper = self.alt_response(429, response="TOO_MANY_REQUESTS")(wrapper)
            roles_text = ", ".join(sorted(_describe(r) for r in allowed))
            return self.doc(
                security=[{"bearerAuth": []}],
                description=f"Allowed: {roles_text}.",
            )(wrapper)

        return decorator


def _describe(role: str) -> str:
    return "a user access token" if role == USER_ROLE else f"an API key with role '{role}'"
