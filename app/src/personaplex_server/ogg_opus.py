"""Ogg/Opus encoding with libopus settings under our control (optional, via PyAV).

sphn's ``OpusStreamWriter`` always encodes at libopus complexity 10, which costs about
1 ms of CPU per 80 ms frame and is most of the server's per-stream cost.  This encoder
produces the same kind of stream (RFC 7845 Ogg encapsulation: an OpusHead page, an
OpusTags page, then one page per 80 ms frame holding four 20 ms packets) with a chosen
complexity.  PyAV (``pip install 'personaplex-server[libopus]'``) bundles libopus; it is
imported only when this encoder is selected (setting ``opus_encoder=libopus``).
"""

from __future__ import annotations

import secrets
import struct
import zlib
from typing import Any

import numpy as np

from . import __version__

# Ogg's CRC-32 (RFC 3533: polynomial 0x04c11db7, no reflection, initial value 0, no final
# xor) computed by zlib's C CRC-32, which is the same polynomial reflected: with each input
# byte's bits reversed, a zero start and no final xor, zlib's register holds Ogg's CRC bit
# reversed.  About 1 us per page instead of about 100 us for a Python table loop, on
# every 80 ms reply frame of every conversation.
_REVERSED_BITS = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def ogg_crc(data: bytes) -> int:
    """Ogg's CRC-32 (polynomial 0x04c11db7, no reflection, initial value 0)."""
    reflected = zlib.crc32(data.translate(_REVERSED_BITS), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int.from_bytes(reflected.to_bytes(4, "little").translate(_REVERSED_BITS), "big")


class OggPager:
    """Wraps packets of one logical stream into Ogg pages."""

    def __init__(self, serial: int | None = None) -> None:
        self.serial = secrets.randbits(32) if serial is None else serial
        self.sequence = 0

    def page(self, packets: list[bytes], granule: int, first: bool = False) -> bytes:
        lacing = bytearray()
        for packet in packets:
            n = len(packet)
            lacing.extend(b"\xff" * (n // 255))
            lacing.append(n % 255)
        if len(lacing) > 255:
            raise ValueError("too many packets for one Ogg page")
        header = struct.pack(
            "<4sBBqIIIB",
            b"OggS",
            0,  # version
            0x02 if first else 0x00,  # beginning of stream
            granule,
            self.serial,
            self.sequence,
            0,  # CRC, filled in below
            len(lacing),
        )
        page = bytearray(header + bytes(lacing) + b"".join(packets))
        struct.pack_into("<I", page, 22, ogg_crc(bytes(page)))
        self.sequence += 1
        return bytes(page)


class LibopusOggEncoder:
    """Mono float PCM -> Ogg/Opus pages, libopus via PyAV, configurable complexity."""

    def __init__(
        self,
        sample_rate: int = 24000,
        complexity: int = 5,
        application: str = "voip",
        bitrate: int | None = None,
    ) -> None:
        try:
            import av
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RuntimeError(
                "opus_encoder=libopus needs PyAV: pip install 'personaplex-server[libopus]' "
                "(or use opus_encoder=sphn)"
            ) from exc
        self._av: Any = av
        codec = av.CodecContext.create("libopus", "w")
        codec.sample_rate = sample_rate
        codec.layout = "mono"
        codec.format = "flt"
        options = {
            "application": application,
            "compression_level": str(complexity),
            "frame_duration": "20",
        }
        if bitrate:
            codec.bit_rate = bitrate
        codec.options = options
        codec.open()
        self._codec = codec
        self.sample_rate = sample_rate
        self._pager = OggPager()
        self._pts = 0
        self._granule = 0  # always counted at 48 kHz (RFC 7845)
        self._scale = 48000 // sample_rate if 48000 % sample_rate == 0 else None
        head = bytes(codec.extradata or b"")
        if not head.startswith(b"OpusHead"):
            head = self._opus_head(pre_skip=312)
        tags_vendor = f"personaplex-server {__version__}".encode()
        tags = b"OpusTags" + struct.pack("<I", len(tags_vendor)) + tags_vendor + b"\0\0\0\0"
        self._headers = self._pager.page([head], 0, first=True) + self._pager.page([tags], 0)
        self._sent_headers = False

    def _opus_head(self, pre_skip: int) -> bytes:
        return b"OpusHead" + struct.pack("<BBHIhB", 1, 1, pre_skip, self.sample_rate, 0, 0)

    def encode(self, pcm: np.ndarray) -> bytes:
        data = np.ascontiguousarray(pcm, dtype=np.float32).reshape(1, -1)
        frame = self._av.AudioFrame.from_ndarray(data, format="flt", layout="mono")
        frame.sample_rate = self.sample_rate
        frame.pts = self._pts
        self._pts += data.shape[1]
        packets = []
        for packet in self._codec.encode(frame):
            packets.append(bytes(packet))
            duration = int(packet.duration or 0)
            self._granule += duration * self._scale if self._scale else duration
        out = b""
        if not self._sent_headers:
            out, self._sent_headers = self._headers, True
        if packets:
            out += self._pager.page(packets, self._granule)
        return out
