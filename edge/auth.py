"""Operator authentication: ``Authorization: Bearer <ADMIN_TOKEN>``, compared in constant time.

The token never travels in a URL (the original put its secret in query strings and logs).
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from . import texts
from .errors import ApiError


def require_admin(request: Request) -> None:
    expected = request.app.state.resources.settings.admin_token
    if not expected:
        raise ApiError(403, texts.ADMIN_DISABLED())
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, texts.ADMIN_TOKEN_NEEDED(), headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(token.encode(), expected.encode()):
        raise ApiError(401, texts.ADMIN_TOKEN_WRONG(), headers={"WWW-Authenticate": "Bearer"})


AdminDep = Annotated[None, Depends(require_admin)]
