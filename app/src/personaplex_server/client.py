"""Command line client: stream a WAV file through a server in real time, save the reply.

Doubles as a load generator (``--concurrency N``) and a deployment smoke test: the exit
status is 0 only when every session got the handshake, audio back and no error.
The access token comes from ``PERSONAPLEX_TOKEN`` or ``--token-file`` (never argv) and is
sent as a cookie header, so it does not end up in URLs or access logs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import statistics
import sys
import time
import urllib.parse
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from . import protocol
from .audio import FRAME_SIZE, SAMPLE_RATE, OpusDecoder, OpusEncoder, read_audio_mono, write_wav
from .auth import COOKIE_NAME

TOKEN_ENV = "PERSONAPLEX_TOKEN"
FRAME_S = FRAME_SIZE / SAMPLE_RATE


@dataclass
class ClientOptions:
    url: str = "http://127.0.0.1:8998"
    input: Path | None = None
    out_dir: Path | None = None
    voice: str | None = None
    text_prompt: str = ""
    seed: int | None = None
    extra_params: dict[str, str] = field(default_factory=dict)
    concurrency: int = 1
    token: str | None = None
    insecure: bool = False
    ca_file: Path | None = None
    handshake_timeout_s: float = 120.0
    tail_seconds: float = 1.0
    linger_seconds: float = 2.0
    realtime: bool = True
    input_seconds: float = 4.0  # length of the generated input when no file is given


@dataclass
class SessionResult:
    index: int
    ok: bool = False
    error: str | None = None
    close_code: int | None = None
    handshake_s: float | None = None
    first_audio_s: float | None = None
    frames_sent: int = 0
    audio_messages: int = 0
    reply_seconds: float = 0.0
    transcript: str = ""
    wav: str | None = None
    transcript_file: str | None = None


def chat_url(base: str, opts: ClientOptions) -> str:
    parsed = urllib.parse.urlsplit(base if "://" in base else "http://" + base)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parsed.scheme)
    if scheme is None:
        raise ValueError(f"unsupported URL scheme in {base!r} (use http(s):// or ws(s)://)")
    path = parsed.path.rstrip("/")
    if not path.endswith("/api/chat"):
        path += "/api/chat"
    query: dict[str, str] = {"text_prompt": opts.text_prompt}
    if opts.voice:
        query["voice_prompt"] = opts.voice
    if opts.seed is not None:
        query["seed"] = str(opts.seed)
    query.update(opts.extra_params)
    return urllib.parse.urlunsplit((scheme, parsed.netloc, path, urllib.parse.urlencode(query), ""))


def ssl_context(opts: ClientOptions) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(opts.ca_file) if opts.ca_file else None)
    if opts.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def load_input(opts: ClientOptions) -> np.ndarray:
    if opts.input is not None:
        pcm = read_audio_mono(opts.input, SAMPLE_RATE)
    else:
        # A voice-like test signal: a gliding tone with syllable-rate amplitude modulation.
        t = np.arange(int(opts.input_seconds * SAMPLE_RATE)) / SAMPLE_RATE
        f = 180 + 40 * np.sin(2 * np.pi * 0.5 * t)
        env = 0.5 * (1 + np.sin(2 * np.pi * 4 * t))
        pcm = (0.3 * env * np.sin(2 * np.pi * np.cumsum(f) / SAMPLE_RATE)).astype(np.float32)
    tail = np.zeros(int(opts.tail_seconds * SAMPLE_RATE), dtype=np.float32)
    pcm = np.concatenate((pcm, tail))
    pad = (-pcm.size) % FRAME_SIZE
    return np.concatenate((pcm, np.zeros(pad, dtype=np.float32)))


async def run_session(index: int, opts: ClientOptions, pcm: np.ndarray) -> SessionResult:
    result = SessionResult(index=index)
    url = chat_url(opts.url, opts)
    headers = {"Cookie": f"{COOKIE_NAME}={opts.token}"} if opts.token else None
    ctx = ssl_context(opts) if url.startswith("wss://") else None
    received: list[np.ndarray] = []
    transcript: list[str] = []
    t_connect = time.perf_counter()
    t_stream: float | None = None
    try:
        async with connect(
            url, additional_headers=headers, ssl=ctx, max_size=2**22, open_timeout=30
        ) as ws:
            handshake = asyncio.Event()
            decoder = OpusDecoder(SAMPLE_RATE)

            async def receive() -> None:
                nonlocal t_stream
                async for message in ws:
                    if not isinstance(message, bytes) or not message:
                        continue
                    kind, payload = message[0], message[1:]
                    if kind == protocol.Kind.HANDSHAKE:
                        result.handshake_s = time.perf_counter() - t_connect
                        handshake.set()
                    elif kind == protocol.Kind.AUDIO:
                        result.audio_messages += 1
                        out = decoder.decode(payload)
                        if out.size:
                            if result.first_audio_s is None and t_stream is not None:
                                result.first_audio_s = time.perf_counter() - t_stream
                            received.append(out)
                    elif kind == protocol.Kind.TEXT:
                        transcript.append(payload.decode("utf-8", errors="replace"))
                    elif kind == protocol.Kind.ERROR:
                        result.error = payload.decode("utf-8", errors="replace")

            receiver = asyncio.create_task(receive())
            waiter = asyncio.create_task(handshake.wait())
            done, _ = await asyncio.wait(
                {receiver, waiter},
                timeout=opts.handshake_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if waiter not in done:
                waiter.cancel()
                if receiver in done:
                    receiver.result()  # re-raises a connection error, if any
                    raise ConnectionError("server closed the connection before the handshake")
                raise TimeoutError(f"no handshake within {opts.handshake_timeout_s:g} s")
            encoder = OpusEncoder(SAMPLE_RATE)
            t_stream = time.perf_counter()
            for i in range(pcm.size // FRAME_SIZE):
                if receiver.done():
                    break
                data = encoder.encode(pcm[i * FRAME_SIZE : (i + 1) * FRAME_SIZE])
                if data:
                    await ws.send(protocol.audio(data))
                result.frames_sent += 1
                if opts.realtime:
                    delay = t_stream + (i + 1) * FRAME_S - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
            # Replies trail the input (one step of model delay, or more when the server
            # is slower than real time): wait for them, up to linger_seconds.
            deadline = time.perf_counter() + opts.linger_seconds
            while (
                not receiver.done()
                and result.audio_messages < result.frames_sent - 1
                and time.perf_counter() < deadline
            ):
                await asyncio.sleep(FRAME_S / 4)
            if not receiver.done():
                await ws.close()
            with_exc = await asyncio.gather(receiver, return_exceptions=True)
            if isinstance(with_exc[0], Exception) and not isinstance(with_exc[0], ConnectionClosed):
                raise with_exc[0]
            if ws.close_code is not None:
                result.close_code = ws.close_code
    except InvalidStatus as exc:
        result.error = f"HTTP {exc.response.status_code} instead of a WebSocket"
        # A fleet at zero instances: its load balancer answers 503 with Retry-After (docs/fleet.md).
        retry_after = exc.response.headers.get("Retry-After")
        if retry_after:
            result.error += f"; the server is starting, retry in {retry_after} s"
    except ConnectionClosed as exc:
        result.close_code = exc.rcvd.code if exc.rcvd else None
        result.error = result.error or f"connection closed: {exc}"
    except (OSError, TimeoutError, ConnectionError, ValueError) as exc:
        result.error = result.error or f"{type(exc).__name__}: {exc}"
    reply = np.concatenate(received) if received else np.zeros(0, dtype=np.float32)
    result.reply_seconds = reply.size / SAMPLE_RATE
    result.transcript = "".join(transcript)
    if opts.out_dir is not None:
        suffix = "" if opts.concurrency == 1 else f"-{index}"
        wav = opts.out_dir / f"reply{suffix}.wav"
        txt = opts.out_dir / f"transcript{suffix}.txt"
        write_wav(wav, reply)
        txt.write_text(result.transcript + "\n", encoding="utf-8")
        result.wav, result.transcript_file = str(wav), str(txt)
    if result.error is None and result.handshake_s is None:
        result.error = "no handshake"
    if result.error is None and reply.size == 0:
        result.error = "no audio received"
    result.ok = result.error is None
    return result


async def run_client(opts: ClientOptions) -> list[SessionResult]:
    pcm = load_input(opts)
    tasks = [run_session(i, opts, pcm) for i in range(opts.concurrency)]
    return list(await asyncio.gather(*tasks))


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


def summarize(results: list[SessionResult]) -> str:
    lines = []
    for r in results:
        state = "ok" if r.ok else f"FAILED ({r.error}; close code {r.close_code})"
        lines.append(
            f"session {r.index}: {state}; handshake {_fmt(r.handshake_s)}, first audio "
            f"{_fmt(r.first_audio_s)} after streaming began, {r.frames_sent} frames sent, "
            f"{r.reply_seconds:.2f} s of reply audio, transcript {r.transcript[:80]!r}"
        )
    hs = [r.handshake_s for r in results if r.handshake_s is not None]
    fa = [r.first_audio_s for r in results if r.first_audio_s is not None]
    ok = sum(r.ok for r in results)
    lines.append(
        f"{ok}/{len(results)} sessions ok; time to handshake median "
        f"{_fmt(statistics.median(hs) if hs else None)} max {_fmt(max(hs) if hs else None)}; "
        f"time to first audio median {_fmt(statistics.median(fa) if fa else None)} "
        f"max {_fmt(max(fa) if fa else None)}"
    )
    return "\n".join(lines)


def read_token(token_file: Path | None) -> str | None:
    if token_file is not None:
        return token_file.read_text(encoding="utf-8").strip() or None
    return os.environ.get(TOKEN_ENV) or None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("PERSONAPLEX_URL", "http://127.0.0.1:8998"),
        help="server base URL (http(s):// or ws(s)://) [env PERSONAPLEX_URL]",
    )
    parser.add_argument(
        "--input",
        type=Path,
        help="audio file to send (WAV, any rate; resampled to 24 kHz). "
        "Default: a few seconds of a synthetic voice-like tone",
    )
    parser.add_argument(
        "--input-seconds",
        type=float,
        default=4.0,
        help="length of the generated test signal when no --input is given",
    )
    parser.add_argument("--out-dir", type=Path, help="write reply WAV and transcript here")
    parser.add_argument("--voice", help="voice prompt name (see /api/voices)")
    parser.add_argument("--text-prompt", default="", help="persona text (max 1000 chars)")
    parser.add_argument("--seed", type=int)
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra query parameter, e.g. text_temperature=0.7 (repeatable)",
    )
    parser.add_argument("--concurrency", type=int, default=1, help="parallel sessions")
    parser.add_argument(
        "--token-file",
        type=Path,
        help=f"file holding the access token (default: env {TOKEN_ENV}; never on argv)",
    )
    parser.add_argument("--insecure", action="store_true", help="accept any TLS certificate")
    parser.add_argument("--ca-file", type=Path, help="CA bundle / self-signed cert to trust")
    parser.add_argument("--handshake-timeout", type=float, default=120.0)
    parser.add_argument(
        "--tail-seconds", type=float, default=1.0, help="silence streamed after the input"
    )
    parser.add_argument(
        "--linger-seconds",
        type=float,
        default=2.0,
        help="after the input, wait this long at most for the remaining replies",
    )
    parser.add_argument("--json", action="store_true", help="print results as JSON")


def options_from_args(args: argparse.Namespace) -> ClientOptions:
    extra: dict[str, str] = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"--param expects NAME=VALUE, got {item!r}")
        extra[name] = value
    if args.concurrency < 1:
        raise SystemExit("--concurrency must be at least 1")
    return ClientOptions(
        url=args.url,
        input=args.input,
        out_dir=args.out_dir,
        voice=args.voice,
        text_prompt=args.text_prompt,
        seed=args.seed,
        extra_params=extra,
        concurrency=args.concurrency,
        token=read_token(args.token_file),
        insecure=args.insecure,
        ca_file=args.ca_file,
        handshake_timeout_s=args.handshake_timeout,
        tail_seconds=args.tail_seconds,
        linger_seconds=args.linger_seconds,
        input_seconds=args.input_seconds,
    )


def main(args: argparse.Namespace) -> int:
    opts = options_from_args(args)
    results = asyncio.run(run_client(opts))
    if args.json:
        out: Any = [asdict(r) for r in results]
        print(json.dumps(out, indent=2))
    else:
        print(summarize(results))
    failed = [r for r in results if not r.ok]
    if failed:
        print(f"{len(failed)} of {len(results)} session(s) failed", file=sys.stderr)
        return 1
    return 0
