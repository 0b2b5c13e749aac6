"""flask-smorest ``Api`` and ``Blueprint`` adapted to this service.

- every error is ``application/problem+json`` and documented so;
- ``Blueprint.auth(*roles)`` authenticates, checks the role and documents
  the bearer security requirement and the 401/403 answers.
"""

from __future__ import annotations

import copy
import functools
import http
import re
from typing import Any, Callable

import marshmallow as ma
from apispec.ext.marshmallow import MarshmallowPlugin, OpenAPIConverter
from flask import current_app, g, request
from flask_smorest import Api as _Api
from flask_smorest import Blueprint as _Blueprint
from flask_smorest.utils import prepare_response
from webargs import core as webargs_core
from webargs.flaskparser import FlaskParser, is_json_request
from werkzeug.datastructures import CombinedMultiDict

from ..errors import PROBLEM_MIMETYPE, ApiError, Forbidden, InvalidInput, Unauthorized
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


class _Converter(OpenAPIConverter):
    """apispec's converter, fixed where the document would admit more than the code."""

    def field2range(self, field: ma.fields.Field, ret: dict[str, Any]) -> dict[str, Any]:
        attributes = super().field2range(field, ret)
        # apispec drops Range(min_inclusive=False): "> 0" would read as ">= 0".
        for validator in field.validators:
            if not isinstance(validator, ma.validate.Range):
                continue
            for bound, inclusive, key in ((validator.min, validator.min_inclusive, "minimum"),
                                          (validator.max, validator.max_inclusive, "maximum")):
                if bound is None or inclusive or key not in attributes:
                    continue
                if attributes[key] != field._serialize(bound, None, None):
                    continue  # another validator's bound is the tighter one
                exclusive = "exclusive" + key[0].upper() + key[1:]
                if self.openapi_version.major == 3 and self.openapi_version.minor >= 1:
                    attributes[exclusive] = attributes.pop(key)
                else:
                    attributes[exclusive] = True
        return attributes

    def field2nullable(self, field: ma.fields.Field, ret: dict[str, Any]) -> dict[str, Any]:
        attributes = super().field2nullable(field, ret)
        # apispec documents "the object or null" as anyOf [$ref, {type: object,
        # nullable: true}], and the second branch admits *any* object; only null is meant.
        for alternative in attributes.get("anyOf", []):
            if alternative == {"type": "object", "nullable": True}:
                alternative["enum"] = [None]
        return attributes


class _MarshmallowPlugin(MarshmallowPlugin):
    """Adds a schema class's own ``OPENAPI_EXTRA`` to its component.

    For rules across fields that marshmallow fields cannot describe (``oneOf``,
    ``anyOf``): the document then says exactly which bodies are accepted.
    Not inherited: a subclass (e.g. the response schema) states its own.
    """

    Converter = _Converter

    def schema_helper(self, name: str, definition: Any, schema: Any = None, **kwargs: Any) -> Any:
        json_schema = super().schema_helper(name, definition, schema=schema, **kwargs)
        if schema is not None and json_schema is not None:
            schema_class = schema if isinstance(schema, type) else type(schema)
            json_schema.update(copy.deepcopy(vars(schema_class).get("OPENAPI_EXTRA", {})))
        return json_schema


class Api(_Api):
    """The API extension with one error handler and problem+json docs."""

    ERROR_SCHEMA = ProblemSchema

    def __init__(self, app: Any = None, *, spec_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        spec_kwargs = {"marshmallow_plugin": _MarshmallowPlugin(), **(spec_kwargs or {})}
        super().__init__(app, spec_kwargs=spec_kwargs, **kwargs)

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


MAX_JSON_DEPTH = 64
# Text no database here can store: NUL (PostgreSQL text and jsonb refuse it) and
# unpaired UTF-16 surrogates such as "\ud800" (not encodable as UTF-8).
_UNSTORABLE_TEXT = re.compile("[\x00\ud800-\udfff]")
_UNSTORABLE_MESSAGE = "contains a NUL character or an unpaired UTF-16 surrogate"


def _check_json_body(data: Any) -> None:
    """Refuse bodies nested absurdly deep or carrying text that cannot be stored.

    Iterative, so that the check itself cannot exhaust the stack; the
    offending field is named like marshmallow's errors (``a.b.0``). The walk
    keeps each value's trail (parent trail, key) and spells the path out only
    for an error: a 100-event batch is checked without formatting ~700 names.
    """
    stack: list[tuple[Any, int, Any]] = [(data, 1, None)]
    search = _UNSTORABLE_TEXT.search
    while stack:
        value, depth, trail = stack.pop()
        if isinstance(value, str):
            if search(value):
                raise InvalidInput(_path(trail) or "body", _UNSTORABLE_MESSAGE)
        elif isinstance(value, dict):
            if value and depth >= MAX_JSON_DEPTH:
                raise _too_deep()
            for key, item in value.items():
                if search(str(key)):
                    raise InvalidInput(_UNSTORABLE_TEXT.sub("?", _path((trail, key))),
                                       f"field name {_UNSTORABLE_MESSAGE}")
                stack.append((item, depth + 1, (trail, key)))
        elif isinstance(value, list):
            if value and depth >= MAX_JSON_DEPTH:
                raise _too_deep()
            stack.extend((item, depth + 1, (trail, index)) for index, item in enumerate(value))


def _too_deep() -> ApiError:
    return ApiError(f"body: nested deeper than {MAX_JSON_DEPTH} levels",
                    errors={"body": [f"nested deeper than {MAX_JSON_DEPTH} levels"]})


def _path(trail: Any) -> str:
    """``a.b.0`` from a trail of (parent trail, key) pairs."""
    keys = []
    while trail is not None:
        trail, key = trail
        keys.append(str(key))
    return ".".join(reversed(keys))


class _StrictParser(FlaskParser):
    """webargs' Flask parser that never lets odd input through to a 500.

    JSON nested so deep that Python's decoder recurses out is a 400; text a
    database cannot store (NUL, lone surrogates) is a 422 naming the field,
    in the body and in query parameters alike.
    """

    def _raw_load_json(self, req: Any) -> Any:
        if not is_json_request(req):
            return webargs_core.missing
        try:
            data = webargs_core.parse_json(req.get_data(cache=True))
        except RecursionError:
            raise ApiError(f"body: nested deeper than {MAX_JSON_DEPTH} levels",
                           errors={"body": [f"nested deeper than {MAX_JSON_DEPTH} levels"]}) from None
        _check_json_body(data)
        return data

    def load_querystring(self, req: Any, schema: ma.Schema) -> Any:
        for name, value in req.args.items(multi=True):
            if _UNSTORABLE_TEXT.search(value) or _UNSTORABLE_TEXT.search(name):
                raise InvalidInput(_UNSTORABLE_TEXT.sub("?", name), _UNSTORABLE_MESSAGE)
        return super().load_querystring(req, schema)

    # "multipart": the text fields and the files of a multipart/form-data body as one
    # set of fields, so that one schema (one documented request body) covers both.
    __location_map__ = {**FlaskParser.__location_map__, "multipart": "load_multipart"}

    def load_multipart(self, req: Any, schema: ma.Schema) -> Any:
        for name, value in req.form.items(multi=True):
            name = name or ""  # a part without a name (hostile clients send them)
            if _UNSTORABLE_TEXT.search(value) or _UNSTORABLE_TEXT.search(name):
                raise InvalidInput(_UNSTORABLE_TEXT.sub("?", name), _UNSTORABLE_MESSAGE)
        for name in req.files:
            name = name or ""
            if _UNSTORABLE_TEXT.search(name):
                raise InvalidInput(_UNSTORABLE_TEXT.sub("?", name), f"field name {_UNSTORABLE_MESSAGE}")
        return self._makeproxy(CombinedMultiDict([req.files, req.form]), schema)


class Blueprint(_Blueprint):
    """A flask-smorest blueprint that knows who may call each view."""

    ARGUMENTS_PARSER = _StrictParser()
    DEFAULT_LOCATION_CONTENT_TYPE_MAPPING = {
        **_Blueprint.DEFAULT_LOCATION_CONTENT_TYPE_MAPPING, "multipart": "multipart/form-data",
    }

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
