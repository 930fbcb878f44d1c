"""The wire protocol of ``/api/chat`` (Kyutai Moshi / PersonaPlex web UI).

Every WebSocket message is binary; its first byte is the kind, the rest the payload.
Audio payloads are Opus in Ogg pages at 24 kHz mono.
"""

from __future__ import annotations

import enum
import json
from typing import Any


class Kind(enum.IntEnum):
    HANDSHAKE = 0x00
    AUDIO = 0x01
    TEXT = 0x02
    CONTROL = 0x03
    METADATA = 0x04
    ERROR = 0x05
    PING = 0x06


class CloseCode(enum.IntEnum):
    """WebSocket close codes (RFC 6455 section 7.4.1 and the IANA registry)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    UNSUPPORTED_DATA = 1003
    INVALID_PAYLOAD = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013


class ProtocolError(Exception):
    """A client message that does not follow the protocol."""


# The official server sends a bare 0x00 once the prompts are processed.
HANDSHAKE = bytes([Kind.HANDSHAKE])
PING = bytes([Kind.PING])


def encode(kind: Kind, payload: bytes = b"") -> bytes:
    return bytes([kind]) + payload


def audio(opus: bytes) -> bytes:
    return encode(Kind.AUDIO, opus)


def text(piece: str) -> bytes:
    return encode(Kind.TEXT, piece.encode("utf-8"))


def error(message: str) -> bytes:
    return encode(Kind.ERROR, message.encode("utf-8"))


def metadata(data: dict[str, Any]) -> bytes:
    return encode(Kind.METADATA, json.dumps(data, separators=(",", ":")).encode("utf-8"))


def decode(message: bytes) -> tuple[Kind, bytes]:
    """Split a message into kind and payload; raise ProtocolError for anything else."""
    if not message:
        raise ProtocolError("empty message")
    try:
        kind = Kind(message[0])
    except ValueError:
        raise ProtocolError(f"unknown message kind 0x{message[0]:02x}") from None
    return kind, message[1:]
