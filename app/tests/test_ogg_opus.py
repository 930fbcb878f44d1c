"""The libopus encoder writes Ogg/Opus that sphn's reader (the official server's
and our decoder) accepts, with correct page CRCs, at a fraction of sphn's encoder cost."""

from __future__ import annotations

import struct
import time

import numpy as np
import pytest

from personaplex_server.audio import OpusDecoder, OpusEncoder, make_encoder_factory
from personaplex_server.ogg_opus import LibopusOggEncoder, OggPager, ogg_crc


def _pages(stream: bytes) -> list[bytes]:
    pages, i = [], 0
    while i < len(stream):
        assert stream[i : i + 4] == b"OggS"
        nseg = stream[i + 26]
        length = 27 + nseg + sum(stream[i + 27 : i + 27 + nseg])
        pages.append(stream[i : i + length])
        i += length
    return pages


def _speech_like(frames: int) -> np.ndarray:
    t = np.arange(frames * 1920) / 24000
    phase = 2 * np.pi * np.cumsum(120 + 30 * np.sin(2 * np.pi * 0.7 * t)) / 24000
    voiced = sum((1 / k) * np.sin(k * phase) for k in range(1, 30))
    return (0.1 * voiced * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)


def test_crc_matches_sphn_pages():
    stream = OpusEncoder().encode(np.zeros(1920, np.float32))
    for page in _pages(stream):
        want = struct.unpack_from("<I", page, 22)[0]
        zeroed = page[:22] + b"\0\0\0\0" + page[26:]
        assert ogg_crc(zeroed) == want


def test_pager_lacing_and_flags():
    pager = OggPager(serial=7)
    first = pager.page([b"x" * 300], 0, first=True)
    assert first[5] == 0x02 and first[26] == 2 and list(first[27:29]) == [255, 45]
    second = pager.page([b"a", b"b"], 960)
    assert second[5] == 0 and struct.unpack_from("<qII", second, 6) == (960, 7, 1)


def test_libopus_stream_decodes_with_sphn_reader():
    pcm = _speech_like(25)
    enc, dec = LibopusOggEncoder(24000, complexity=3), OpusDecoder()
    out = [enc.encode(pcm[i * 1920 : (i + 1) * 1920]) for i in range(25)]
    assert out[0].startswith(b"OggS") and b"OpusHead" in out[0] and b"OpusTags" in out[0]
    decoded = np.concatenate([dec.decode(o) for o in out])
    assert decoded.size == 25 * 1920
    assert np.abs(decoded).max() > 0.05  # audio, not silence
    granules = [struct.unpack_from("<q", p, 6)[0] for o in out for p in _pages(o)]
    assert granules[-1] == 25 * 3840  # 48 kHz units, as RFC 7845 wants


def test_libopus_is_cheaper_than_sphn():
    pcm = _speech_like(50)

    def cost(enc) -> float:
        t0 = time.process_time()
        for i in range(50):
            enc.encode(pcm[i * 1920 : (i + 1) * 1920])
        return time.process_time() - t0

    fast = make_encoder_factory("libopus", complexity=3)(24000)
    assert cost(fast) < cost(OpusEncoder())


def test_auto_picks_libopus_when_pyav_is_installed():
    from personaplex_server.audio import describe_encoder, resolve_encoder_kind

    assert resolve_encoder_kind("auto") == "libopus"  # PyAV is a runtime dependency
    assert describe_encoder("auto", 3, 24000, "voip") == "libopus voip, complexity 3, 24 kbit/s"
    assert isinstance(make_encoder_factory("auto")(24000), LibopusOggEncoder)


def test_unknown_encoder_is_refused():
    with pytest.raises(ValueError, match="sphn or libopus"):
        make_encoder_factory("mp3")


def _crc_reference(data: bytes) -> int:
    """RFC 3533's CRC bit by bit: polynomial 0x04c11db7, MSB first, init 0, no final xor."""
    crc = 0
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else (crc << 1)
            crc &= 0xFFFFFFFF
    return crc


def test_crc_matches_the_bitwise_definition():
    rng = np.random.default_rng(5)
    for n in (0, 1, 2, 27, 255, 4096):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert ogg_crc(data) == _crc_reference(data), n
    assert ogg_crc(b"OggS") == _crc_reference(b"OggS") != 0
