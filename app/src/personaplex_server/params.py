"""Validation of the ``/api/chat`` query parameters.

Names and defaults follow the official PersonaPlex web UI (``text_temperature`` 0.7,
``text_topk`` 25, ``audio_temperature`` 0.8, ``audio_topk`` 250, ``seed`` -1 = random).
Parameters the official server ignores (``pad_mult``, ``repetition_penalty*``,
``text_seed``/``audio_seed``, ``worker_auth_id``, ``email``) are accepted when well formed
and ignored; anything malformed is refused with a message that names the parameter.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from .errors import BadRequest

DEFAULT_VOICE = "NATF0.pt"
MAX_VOICE_NAME = 128
SEED_MAX = 2**32 - 1


@dataclass(frozen=True)
class ChatParams:
    voice: str
    text_prompt: str
    temp: float
    temp_text: float
    top_k: int
    top_k_text: int
    seed: int | None


def _number(query: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a number, got {raw[:32]!r}") from None
    if not math.isfinite(value) or not lo <= value <= hi:
        raise BadRequest(f"{name} must be between {lo:g} and {hi:g}")
    return value


def _integer(query: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        # The UI sends integers; accept "25.0" but nothing fractional.
        f = _number(query, name, float(default), lo, hi)
        if not f.is_integer():
            raise BadRequest(f"{name} must be an integer") from None
        value = int(f)
    if not lo <= value <= hi:
        raise BadRequest(f"{name} must be between {lo} and {hi}")
    return value


def check_voice_name(name: str, available: Sequence[str]) -> str:
    """Accept only the bare name of an available voice (no paths, no hidden files)."""
    if (
        not name
        or len(name) > MAX_VOICE_NAME
        or "/" in name
        or "\\" in name
        or "\x00" in name
        or name.startswith(".")
        or not name.isprintable()
    ):
        raise BadRequest("voice_prompt must be the bare file name of an available voice")
    if name not in available:
        raise BadRequest(f"voice_prompt {name!r} is not available; see /api/voices")
    return name


# Line breaks and tabs are control characters a persona text may well contain.
_ALLOWED_CONTROLS = frozenset("\t\n\r")


def _check_prompt_characters(text: str) -> None:
    """Accept all printable Unicode, including the format and space characters that
    ``str.isprintable`` rejects (no-break and thin spaces, soft hyphen, zero-width joiner:
    common in pasted text and emoji); refuse control characters (category Cc) and lone
    surrogates (Cs, not encodable as UTF-8 for the tokenizer)."""
    for i, c in enumerate(text):
        if c in _ALLOWED_CONTROLS:
            continue
        if unicodedata.category(c) in ("Cc", "Cs"):
            raise BadRequest(
                f"text_prompt contains the control character U+{ord(c):04X} at position "
                f"{i + 1}; remove it (tabs and line breaks are fine)"
            )


def parse_chat_params(
    query: Mapping[str, str],
    voices: Callable[[], Sequence[str]],
    max_text_chars: int,
) -> ChatParams:
    available = list(voices())
    raw_voice = query.get("voice_prompt") or ""
    if not raw_voice:
        if DEFAULT_VOICE in available:
            raw_voice = DEFAULT_VOICE
        elif available:
            raw_voice = sorted(available)[0]
        else:
            raise BadRequest("no voice prompts are installed on this server")
    voice = check_voice_name(raw_voice, available)

    text_prompt = query.get("text_prompt", "")
    if len(text_prompt) > max_text_chars:
        raise BadRequest(f"text_prompt is longer than {max_text_chars} characters")
    _check_prompt_characters(text_prompt)

    # The engine samples (temperature > 0); 0.01 is as close to greedy as it gets.
    temp_text = _number(query, "text_temperature", 0.7, 0.01, 2.0)
    top_k_text = _integer(query, "text_topk", 25, 1, 32000)
    temp = _number(query, "audio_temperature", 0.8, 0.01, 2.0)
    top_k = _integer(query, "audio_topk", 250, 1, 2048)
    seed_value = _integer(query, "seed", -1, -1, SEED_MAX)

    # Accepted for compatibility with the official UI, validated, not used (as upstream).
    _number(query, "pad_mult", 0.0, -4.0, 4.0)
    _number(query, "repetition_penalty", 1.0, 0.0, 10.0)
    _integer(query, "repetition_penalty_context", 64, 0, 10000)
    _integer(query, "text_seed", 0, -1, 2**63 - 1)
    _integer(query, "audio_seed", 0, -1, 2**63 - 1)

    return ChatParams(
        voice=voice,
        text_prompt=text_prompt.strip(),
        temp=temp,
        temp_text=temp_text,
        top_k=top_k,
        top_k_text=top_k_text,
        seed=None if seed_value == -1 else seed_value,
    )
