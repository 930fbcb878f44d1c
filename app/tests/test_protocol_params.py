"""Wire protocol framing and query parameter validation."""

from __future__ import annotations

import numpy as np
import pytest

from personaplex_server import protocol
from personaplex_server.audio import Framer, OpusDecodeError, OpusDecoder, OpusEncoder
from personaplex_server.errors import BadRequest, ServerBusy, to_client
from personaplex_server.params import parse_chat_params

VOICES = ["NATF0.pt", "NATM1.pt", "custom.wav"]


def params(**query: str):
    return parse_chat_params(query, lambda: VOICES, 1000)


def test_kinds_and_decode():
    assert [k.value for k in protocol.Kind] == [0, 1, 2, 3, 4, 5, 6]
    assert protocol.decode(b"\x01abc") == (protocol.Kind.AUDIO, b"abc")
    assert protocol.text("hé") == b"\x02h\xc3\xa9"
    assert protocol.error("busy") == b"\x05busy"
    with pytest.raises(protocol.ProtocolError, match="0x07"):
        protocol.decode(b"\x07")
    with pytest.raises(protocol.ProtocolError, match="empty"):
        protocol.decode(b"")


def test_error_mapping_in_one_place():
    busy = to_client(ServerBusy("server busy"))
    assert (busy.message, busy.close_code) == ("server busy", 1013)
    internal = to_client(RuntimeError("secret path /x/y"))
    assert internal.close_code == 1011 and "secret" not in (internal.message or "")


def test_defaults_are_the_official_uis():
    p = params(voice_prompt="NATF0.pt")
    assert (p.temp, p.temp_text, p.top_k, p.top_k_text, p.seed) == (0.8, 0.7, 250, 25, None)
    assert p.text_prompt == ""


def test_official_ui_query_is_accepted():
    p = params(
        text_temperature="0.7",
        text_topk="25",
        audio_temperature="0.8",
        audio_topk="250",
        pad_mult="0",
        text_seed="123456",
        audio_seed="654321",
        repetition_penalty_context="64",
        repetition_penalty="1",
        text_prompt="You are a wise and friendly teacher.",
        voice_prompt="NATM1.pt",
        worker_auth_id="x",
        email="a@b.c",
    )
    assert p.voice == "NATM1.pt" and p.text_prompt.startswith("You are")


def test_missing_voice_defaults_to_natf0_or_first():
    assert params().voice == "NATF0.pt"
    assert parse_chat_params({}, lambda: ["b.pt", "a.pt"], 1000).voice == "a.pt"
    with pytest.raises(BadRequest, match="no voice prompts"):
        parse_chat_params({}, lambda: [], 1000)


@pytest.mark.parametrize(
    "voice",
    ["../NATF0.pt", "/etc/passwd", "voices/NATF0.pt", "..\\x", ".hidden", "a\x00b", "x" * 200],
)
def test_voice_must_be_bare_available_name(voice):
    with pytest.raises(BadRequest):
        params(voice_prompt=voice)


def test_seed_and_limits():
    assert params(seed="-1").seed is None
    assert params(seed="42").seed == 42
    assert params(text_topk="25.0").top_k_text == 25
    for bad in ({"seed": "-2"}, {"seed": "x"}, {"audio_topk": "5000"}, {"text_temperature": "inf"}):
        with pytest.raises(BadRequest):
            params(**bad)
    assert len(params(text_prompt="a" * 1000).text_prompt) == 1000
    with pytest.raises(BadRequest, match="1000"):
        params(text_prompt="a" * 1001)
    with pytest.raises(BadRequest, match="control"):
        params(text_prompt="hi\x07")


@pytest.mark.parametrize(
    "text",
    [
        "Caf\u00e9\u00a0au lait",  # no-break space
        "10\u202f000 \u20ac",  # narrow no-break space (French thousands)
        "thin\u2009space",
        "co\u00adoperate",  # soft hyphen
        "family \U0001f468\u200d\U0001f469\u200d\U0001f467",  # zero-width joiners
        "zero\u200bwidth and \u2060word joiner, \ufeffBOM",
        "line\u2028separator, right\u200fto\u200eleft marks",
        "\u4f60\u597d, \u0645\u0631\u062d\u0628\u0627, \u0928\u092e\u0938\u094d\u0924\u0947",
        "lines\nand\ttabs\r\nfrom a text area",
    ],
)
def test_text_prompt_accepts_all_printable_unicode(text):
    assert params(text_prompt=text).text_prompt == text.strip()


@pytest.mark.parametrize(
    ("text", "code_point", "position"),
    [
        ("hi\x07", "U+0007", 3),
        ("\x00nul", "U+0000", 1),
        ("esc\x1b[31m", "U+001B", 4),
        ("del\x7f", "U+007F", 4),
        ("c1 \x85 next line", "U+0085", 4),
        ("lone \ud800 surrogate", "U+D800", 6),
    ],
)
def test_text_prompt_refuses_control_characters_naming_the_code_point(text, code_point, position):
    with pytest.raises(BadRequest) as err:
        params(text_prompt=text)
    assert f"control character {code_point} at position {position}" in err.value.message


def test_framer_makes_whole_frames():
    f = Framer(1920)
    assert f.push(np.zeros(1000, np.float32)) == []
    out = f.push(np.ones(3000, np.float32) * 2)  # clipped to [-1, 1]
    assert len(out) == 2 and all(x.shape == (1920,) for x in out)
    assert out[1].max() == 1.0
    assert len(f.push(np.zeros(1, np.float32))) == 0


def test_opus_round_trip_and_garbage():
    enc, dec = OpusEncoder(), OpusDecoder()
    pcm = (0.2 * np.sin(np.arange(1920 * 3) / 7)).astype(np.float32)
    got = np.concatenate([dec.decode(enc.encode(pcm[i * 1920 : (i + 1) * 1920])) for i in range(3)])
    assert got.size == 3 * 1920
    with pytest.raises(OpusDecodeError):
        OpusDecoder().decode(b"definitely not an ogg stream, longer than a page header")
