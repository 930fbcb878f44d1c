"""Replies decode in the official web UI's own Opus decoder (opus-recorder's
``decoderWorker``, in the UI build that the model repository's ``dist.tgz`` carries).

The build: ``$PERSONAPLEX_UI_DIST`` (an unpacked ``dist`` folder), else the shared
fixtures' ``personaplex-ui`` (see ``helpers.shared_fixtures``); skipped when neither is
at hand. The decoder runs in ``node`` the way the UI's Web Worker runs it
(``scripts/app-test-prepare.sh`` installs Debian's nodejs; missing under CI it fails);
its output is compared with sphn's decoder for both reply encoders.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import missing_program, shared_fixtures

from personaplex_server.audio import OpusDecoder, make_encoder_factory


def _ui_build() -> Path | None:
    if os.environ.get("PERSONAPLEX_UI_DIST"):
        return Path(os.environ["PERSONAPLEX_UI_DIST"])
    fixtures = shared_fixtures()
    return None if fixtures is None else fixtures / "personaplex-ui"


@pytest.fixture(scope="module")
def worker() -> Path:
    build = _ui_build()
    if build is None:
        pytest.skip("the official UI build is not at hand (set PERSONAPLEX_UI_DIST)")
    path = build / "assets" / "decoderWorker.min.js"
    if not path.is_file():
        pytest.fail(f"{path} not found: is {build} the official UI build?")
    if shutil.which("node") is None:
        missing_program("node not found: run scripts/app-test-prepare.sh (apt-get install nodejs)")
    return path


HARNESS = r"""
const fs = require('fs'); const vm = require('vm'); const path = require('path');
const [worker, input, output] = process.argv.slice(2);
const out = [];
globalThis.Module = { wasmBinary: fs.readFileSync(worker.replace(/\.js$/, '.wasm')) };
globalThis.__dirname = path.dirname(worker); globalThis.__filename = worker;
globalThis.require = require;
globalThis.postMessage = (m) => { if (m) out.push(Array.isArray(m) ? m[0] : m); };
globalThis.close = () => {};
vm.runInThisContext(fs.readFileSync(worker, 'utf8'));
Module.mainReady.then(() => {
  // the UI's settings (decoderWorker.ts), without resampling
  const dec = new Module.OggOpusDecoder({bufferLength: 960, decoderSampleRate: 24000,
    outputBufferSampleRate: 24000, resampleQuality: 0}, Module);
  const buf = fs.readFileSync(input);
  for (let i = 0; i < buf.length;) {
    const n = buf.readUInt32LE(i); i += 4;
    dec.decode(new Uint8Array(buf.subarray(i, i + n))); i += n;
  }
  const pcm = new Float32Array(out.reduce((a, b) => a + b.length, 0));
  let k = 0; for (const b of out) { pcm.set(b, k); k += b.length; }
  fs.writeFileSync(output, Buffer.from(pcm.buffer));
});
"""


@pytest.mark.parametrize("encoder", ["sphn", "libopus"])
def test_official_ui_decoder_plays_our_replies(tmp_path: Path, encoder: str, worker: Path) -> None:
    frames = 25
    t = np.arange(frames * 1920) / 24000
    phase = 2 * np.pi * np.cumsum(120 + 30 * np.sin(2 * np.pi * 0.7 * t)) / 24000
    src = (0.1 * np.sum([np.sin(k * phase) / k for k in range(1, 30)], axis=0)).astype(np.float32)
    enc = make_encoder_factory(encoder)(24000)
    messages = [enc.encode(src[i * 1920 : (i + 1) * 1920]) for i in range(frames)]
    stream = tmp_path / "replies.bin"
    stream.write_bytes(b"".join(len(m).to_bytes(4, "little") + m for m in messages))
    (tmp_path / "harness.js").write_text(HARNESS)
    subprocess.run(
        ["node", str(tmp_path / "harness.js"), str(worker), str(stream), str(tmp_path / "ui.f32")],
        check=True,
        timeout=60,
    )
    ui = np.fromfile(tmp_path / "ui.f32", dtype=np.float32)
    dec = OpusDecoder()
    ours = np.concatenate([dec.decode(m) for m in messages])
    assert ui.size == ours.size == frames * 1920
    lag = max(range(-200, 201), key=lambda d: float(np.dot(np.roll(ui, -d), ours)))
    corr = np.corrcoef(np.roll(ui, -lag)[400:-400], ours[400:-400])[0, 1]
    assert corr > 0.99, (lag, corr)
