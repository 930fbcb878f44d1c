"""A tiny PersonaPlex-shaped model with random weights, laid out like the HF repository.

Same structure as nvidia/personaplex-7b-v1 where the runtime depends on it: n_q=16
streams, card=2048 (the silence/sine prompt codes go up to 2008), the 17 delays, dep_q=16
in the checkpoint, bf16 weights with the attention projections stored concatenated
(``in_proj_weight``) as moshi checkpoints do; a Mimi with 8 codebooks of 2048 random
entries (a zero codebook would encode everything to 0); a SentencePiece model trained on
generated English-like text with the real tokenizer's special ids (0 unk, 1 bos, 2 eos,
3 pad) and "<system>" appearing in the training text, encoded as plain text like the fork
does; two voice prompts in the fork's ``.pt`` format and one audio voice prompt.
Only the dimensions are tiny. Runs in a few seconds on a CPU.

Usage: ``python -m personaplex_server.tiny OUT_DIR [--seed N] [--context FRAMES]``.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import wave
from pathlib import Path
from typing import Any

import numpy as np

TINY_VOCAB = 200
_TEXT = (
    "you enjoy having a good conversation about technology science music food travel "
    "the weather your name is jane alex sam you are a helpful assistant who works at "
    "a bank bakery hotel airline and answers questions politely with short sentences "
    "hello hi yes no maybe thanks sure great okay well so what how why when where "
    "customer service agent teacher friend wise kind funny calm today tomorrow"
)
_WORDS = _TEXT.split()


def tiny_lm_kwargs(context: int = 3000) -> dict[str, Any]:
    from moshi.models import loaders

    kw: dict[str, Any] = dict(loaders._lm_kwargs)
    kw.update(
        dim=32,
        num_heads=2,
        num_layers=2,
        text_card=TINY_VOCAB,
        context=context,
        depformer_dim=16,
        depformer_dim_feedforward=int(4.125 * 16),
        depformer_num_heads=2,
        depformer_num_layers=2,
        dep_q=16,
    )
    assert kw["n_q"] == 16 and kw["card"] == 2048 and len(kw["delays"]) == 17
    return kw


def tiny_mimi_config() -> dict[str, Any]:
    from moshi.models import loaders

    cfg = json.loads(json.dumps(loaders._mimi_config))
    cfg["seanet"].update(dimension=32, n_filters=2)
    cfg["quantizer"].update(dimension=8, n_q=8, input_dimension=32, output_dimension=32)
    cfg["transformer"].update(
        d_model=32,
        num_heads=2,
        num_layers=1,
        dim_feedforward=64,
        input_dimension=32,
        output_dimensions=[32],
    )
    return cfg


def _corpus(rng: random.Random, n: int = 1500) -> list[str]:
    lines = []
    for _ in range(n):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 14))]
        text = " ".join(words).capitalize() + rng.choice([".", "?", "!", ","])
        if rng.random() < 0.3:
            text = f"<system> {text} <system>"
        lines.append(text)
    return lines


def _train_tokenizer(path: Path, seed: int) -> None:
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus(random.Random(seed))),
        model_writer=model,
        vocab_size=TINY_VOCAB,
        model_type="unigram",
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=3,
        num_threads=1,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    path.write_bytes(model.getvalue())


def _concat_projections(state: dict[str, Any]) -> dict[str, Any]:
    """Store per-step attention projections concatenated, as moshi checkpoints do."""
    import torch

    out: dict[str, Any] = {}
    groups: dict[str, list[tuple[int, Any]]] = {}
    for k, v in state.items():
        for part, target in ((".in_projs.", "in_proj_weight"), (".out_projs.", "out_proj.weight")):
            if part in k and k.endswith(".weight"):
                prefix, rest = k.split(part)
                idx = int(rest.split(".")[0])
                groups.setdefault(f"{prefix}.{target}", []).append((idx, v))
                break
        else:
            out[k] = v
    for k, items in groups.items():
        out[k] = torch.cat([v for _, v in sorted(items, key=lambda t: t[0])], dim=0)
    return out


def _write_wav(path: Path, pcm: np.ndarray, sr: int) -> None:
    data = (np.clip(pcm, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(data.tobytes())


def generate(out_dir: Path, seed: int = 0, context: int = 3000) -> Path:
    """Write the tiny model into ``out_dir`` (created if needed); returns ``out_dir``."""
    import torch
    from moshi.models import loaders
    from moshi.models.lm import LMModel
    from safetensors.torch import save_file

    from .engine import constants as C
    from .engine.prompt import voice_prompt_embeddings

    out_dir = Path(out_dir)
    (out_dir / C.VOICES_DIR).mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)

    lm_kwargs = tiny_lm_kwargs(context)
    with torch.no_grad():
        lm = LMModel(device="cpu", dtype=torch.float32, **lm_kwargs)
        # make the output heads confident enough that sampling is not uniform noise
        for lin in [*lm.linears, lm.text_linear]:
            assert isinstance(lin, torch.nn.Linear)
            lin.weight.mul_(4.0)
        lm.eval()
        state = {k: v.to(torch.bfloat16).contiguous() for k, v in lm.state_dict().items()}
    save_file(_concat_projections(state), str(out_dir / C.LM_FILE))

    mimi_cfg = tiny_mimi_config()
    mimi = loaders.get_mimi(None, mimi_cfg, device="cpu")
    with torch.no_grad():
        for name, buf in mimi.named_buffers():
            if name.endswith("embedding_sum"):
                buf.copy_(torch.randn(buf.shape, generator=gen))
            elif name.endswith("cluster_usage") or name.endswith("_initialized"):
                buf.fill_(1.0)
    save_file({k: v.contiguous() for k, v in mimi.state_dict().items()}, str(out_dir / C.MIMI_FILE))
    (out_dir / "mimi_config.json").write_text(json.dumps(mimi_cfg, indent=1))

    _train_tokenizer(out_dir / C.TOKENIZER_FILE, seed)

    config = dict(lm_kwargs)
    config.update(
        moshi_name=C.LM_FILE,
        mimi_name=C.MIMI_FILE,
        tokenizer_name=C.TOKENIZER_FILE,
        mimi_config_name="mimi_config.json",
        model_type="moshi",
    )
    (out_dir / C.CONFIG_FILE).write_text(json.dumps(config, indent=1))

    # voices: two embedding files as the fork saves them (bf16 embeddings), one audio file
    lm_bf = lm.to(torch.bfloat16)
    for name, frames in (("NATF0.pt", 10), ("NATM1.pt", 14)):
        codes = torch.randint(0, 2048, (frames, 8), generator=gen)
        torch.save(voice_prompt_embeddings(lm_bf, codes), out_dir / C.VOICES_DIR / name)
    rng = np.random.default_rng(seed)
    t = np.arange(int(1.0 * C.SAMPLE_RATE)) / C.SAMPLE_RATE
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    _write_wav(
        out_dir / C.VOICES_DIR / "TONE0.wav",
        tone + 0.01 * rng.standard_normal(t.shape),
        C.SAMPLE_RATE,
    )
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a tiny random PersonaPlex-shaped model.")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--context", type=int, default=3000, help="context in frames")
    args = parser.parse_args(argv)
    path = generate(args.out_dir, seed=args.seed, context=args.context)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
