"""Access token check (query parameter ``token`` or cookie; browsers cannot set WebSocket
headers, so a header is not an option for the official UI)."""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Mapping

from pydantic import SecretStr

COOKIE_NAME = "personaplex_token"
QUERY_NAME = "token"

# The token is a secret and the text prompt is the user's content: neither goes to logs.
_TOKEN_IN_TEXT = re.compile(r"(\b(?:token|text_prompt)=)[^&\s\"']*", re.IGNORECASE)


def token_ok(
    expected: SecretStr | None, query: Mapping[str, str], cookies: Mapping[str, str]
) -> bool:
    """True when no token is configured or the client presents the right one."""
    if expected is None:
        return True
    want = expected.get_secret_value().encode("utf-8")
    ok = False
    # Compare every candidate (constant time each) so timing does not reveal which one.
    for candidate in (query.get(QUERY_NAME), cookies.get(COOKIE_NAME)):
        if candidate is not None:
            ok |= hmac.compare_digest(candidate.encode("utf-8"), want)
    return ok


def redact(text: str) -> str:
    return _TOKEN_IN_TEXT.sub(r"\1***", text)


class RedactTokenFilter(logging.Filter):
    """Removes ``token=...`` and ``text_prompt=...`` values from log records (e.g. uvicorn's
    access log of request URLs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {
                k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()
            }
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True
