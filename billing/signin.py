"""Mini-program sign-in, and the session tokens every other room turns back into an openid.

A ``wx.login`` code is exchanged at WeChat for the user's openid; the caller gets our own signed, expiring
token (``tokens``), never WeChat's session_key. ``Sessions.openid`` is the one place a token is checked.
"""

from __future__ import annotations

import logging

from bus import texts
from bus.billing import OpenidRequest, SessionReply

from . import tokens
from .errors import BillingError
from .settings import BillingSettings
from .shared import need_wechat
from .wechat import WeChat

log = logging.getLogger(__name__)


class Sessions:
    def __init__(self, settings: BillingSettings, wechat: WeChat | None) -> None:
        self.settings = settings
        self._wechat = wechat

    async def sign_in(self, req: OpenidRequest) -> SessionReply:
        code = req.code.strip()
        if not code or len(code) > 128:
            raise BillingError(400, texts.BILLING_SEND_CODE())
        openid = await need_wechat(self._wechat).code2session(code)
        assert self.settings.session_secret
        token, expires = tokens.issue(self.settings.session_secret.encode(), openid, self.settings.session_ttl)
        log.info("signed in %s", openid)
        return SessionReply(openid=openid, token=token, expires_at=expires)

    def openid(self, token: str) -> str:
        """Whose session ``token`` is; 401 when it is not a valid, unexpired one of ours."""
        if not self.settings.session_secret:  # no WeChat, so no session was ever issued
            raise BillingError(503, texts.BILLING_SIGN_IN_NOT_CONFIGURED())
        return tokens.verify(self.settings.session_secret.encode(), token)
