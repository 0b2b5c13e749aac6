"""Erasure of the caller: ``DELETE /v1/me`` (TRUST.md "Erasure and retention")."""

from __future__ import annotations

import marshmallow as ma
from flask import current_app
from flask.views import MethodView

from ..services.erasure import request_erasure
from ..timeutil import utcnow
from .api import Blueprint, current_user_id

blp = Blueprint("me_erase", __name__, url_prefix="/v1", description="Erasure of the caller and all their data")


class ErasureAcceptedSchema(ma.Schema):
    status = ma.fields.String(required=True, metadata={"example": "erasing"})
    requested_at = ma.fields.DateTime(required=True)


@blp.route("/me")
class Me(MethodView):
    @blp.auth("user")
    @blp.response(202, ErasureAcceptedSchema)
    def delete(self):
        """Erase the caller: the token stops working at once; every trace is gone within minutes"""
        container = current_app.extensions["smartsvc"]
        user_id = current_user_id()
        request_erasure(container.database, user_id)
        # This process's cache of verified tokens holds the user id; other processes drop theirs within
        # VERIFIED_KEEP_S, or at the next use of the token, which is refused.
        container.tokens.forget_user(user_id)
        return {"status": "erasing", "requested_at": utcnow()}
