"""Session errors and the one place that maps them to what the client sees.

A session ends with an exception; :func:`to_client` turns it into the 0x05 error text
(or none) and the WebSocket close code.  Unexpected exceptions become a generic
"internal error" so that no internals leak to clients.
"""

from __future__ import annotations

from dataclasses import dataclass

from .protocol import CloseCode, ProtocolError


class SessionError(Exception):
    """Ends a session with a message for the client and a close code."""

    close_code: CloseCode = CloseCode.INTERNAL_ERROR
    reason: str = "error"  # metrics label

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unauthorized(SessionError):
    close_code = CloseCode.POLICY_VIOLATION
    reason = "unauthorized"


class NotReady(SessionError):
    close_code = CloseCode.TRY_AGAIN_LATER
    reason = "not_ready"


class ServerBusy(SessionError):
    close_code = CloseCode.TRY_AGAIN_LATER
    reason = "busy"


class BadRequest(SessionError):
    close_code = CloseCode.POLICY_VIOLATION
    reason = "bad_request"


class BadMessage(SessionError):
    close_code = CloseCode.UNSUPPORTED_DATA
    reason = "bad_message"


class MalformedAudio(SessionError):
    close_code = CloseCode.INVALID_PAYLOAD
    reason = "malformed_audio"


class MessageTooBig(SessionError):
    close_code = CloseCode.MESSAGE_TOO_BIG
    reason = "message_too_big"


class ClientTooSlow(SessionError):
    close_code = CloseCode.POLICY_VIOLATION
    reason = "client_too_slow"


class IdleTimeout(SessionError):
    close_code = CloseCode.NORMAL
    reason = "idle"


class ServerShutdown(SessionError):
    close_code = CloseCode.GOING_AWAY
    reason = "shutdown"


class ContextExhausted(SessionError):
    """The model's context (3000 frames, 240 s for the real model) is used up."""

    close_code = CloseCode.NORMAL
    reason = "context_end"


class ModelFailure(SessionError):
    """The model produced non-finite values for this conversation (its state is lost)."""

    close_code = CloseCode.INTERNAL_ERROR
    reason = "model_failure"


class ClientDisconnected(Exception):
    """The client went away; nothing is sent back."""


@dataclass(frozen=True)
class ClientOutcome:
    message: str | None  # 0x05 payload, None to send nothing
    close_code: CloseCode
    reason: str  # short label for logs and metrics


def to_client(exc: BaseException) -> ClientOutcome:
    """Map any exception that ended a session to what the client is told."""
    if isinstance(exc, ClientDisconnected):
        return ClientOutcome(None, CloseCode.NORMAL, "client_closed")
    if isinstance(exc, SessionError):
        return ClientOutcome(exc.message, exc.close_code, exc.reason)
    if isinstance(exc, ProtocolError):
        return ClientOutcome(f"protocol error: {exc}", CloseCode.UNSUPPORTED_DATA, "bad_message")
    return ClientOutcome("internal server error", CloseCode.INTERNAL_ERROR, "internal_error")
