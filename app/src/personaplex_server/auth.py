"""Access token check: query parameter ``token``, cookie, or ``Authorization: Bearer``.

Browsers cannot set WebSocket headers, so the official UI uses the query parameter once
and then the cookie; server-side clients (voice-agent frameworks with their own HTTP
session) send the standard bearer header (RFC 6750 section 2.1)."""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Mapping

from pydantic import SecretStr

COOKIE_NAME = "personaplex_token"
QUERY_NAME = "token"
HEADER_NAME = "authorization"

# The token is a secret and the text prompt is the user's content: neither goes to logs.
_SECRETS_IN_TEXT = (
    (re.compile(r"(\b(?:token|text_prompt)=)[^&\s\"']*", re.IGNORECASE), r"\1***"),
    (re.compile(r"(\bBearer\s+)[^\s\"',]+", re.IGNORECASE), r"\1***"),
)
# RFC 7235 section 2.1: the auth scheme is case-insensitive; RFC 6750 section 2.1: b64token.
_BEARER = re.compile(r"\s*bearer\s+(\S+)\s*\Z", re.IGNORECASE)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header value, else None."""
    if not authorization:
        return None
    m = _BEARER.match(authorization)
    return m.group(1) if m else None


def token_ok(
    expected: SecretStr | None,
    query: Mapping[str, str],
    cookies: Mapping[str, str],
    headers: Mapping[str, str] | None = None,
) -> bool:
    """True when no token is configured or the client presents the right one."""
    if expected is None:
        return True
    want = expected.get_secret_value().encode("utf-8")
    bearer = bearer_token(headers.get(HEADER_NAME)) if headers is not None else None
    ok = False
    # Compare every candidate (constant time each) so timing does not reveal which one.
    for candidate in (query.get(QUERY_NAME), cookies.get(COOKIE_NAME), bearer):
        if candidate is not None:
            ok |= hmac.compare_digest(candidate.encode("utf-8"), want)
    return ok


def redact(text: str) -> str:
    for pattern, replacement in _SECRETS_IN_TEXT:
        text = pattern.sub(replacement, text)
    return text


class RedactTokenFilter(logging.Filter):
    """Removes ``token=...``, ``text_prompt=...`` and bearer token values from log records
    (e.g. uvicorn's access log of request URLs).

    It redacts the rendered message, not the format string: rewriting ``msg`` alone would
    turn ``text_prompt=%s`` into ``text_prompt=***`` and leave the arguments without a
    placeholder (a "Logging error" instead of the line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            # A malformed call: leave it to the handler, which reports it as such.
            return True
        record.msg = redact(message)
        record.args = None
        return True
