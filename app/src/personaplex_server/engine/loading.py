"""Loading PersonaPlex on upstream moshi 0.2.13.

The LM checkpoint is built with the dep_q it was trained with (16: the depth transformer
also predicts the user's 8 codebooks) and loaded strictly, one transformer layer at a time
(host memory and GPU memory peak at one layer in the checkpoint dtype, which is what lets
a 16 GB GPU load int8/nf4 weights from a 16.7 GB bf16 file). Right after each layer is
loaded, the user half of the depth transformer is dropped: the runtime runs dep_q=8, as
upstream's LMGen does when it is given the user's codebooks as input. The result has
exactly the structure of a model built with dep_q=8, which is also the layout of the
optional sliced copy (``model.dep_q8.safetensors``) written next to the weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch
from moshi.models import loaders
from moshi.models.compression import MimiModel
from moshi.models.lm import LMModel
from safetensors import safe_open
from torch import nn

from . import constants as C
from .quant import quantize_linears
from .types import EngineLoadError

log = logging.getLogger(__name__)

# Keys of an upstream-style config.json that are not LMModel kwargs.
_NON_LM_KEYS = (
    "moshi_name",
    "mimi_name",
    "mimi_config_name",
    "tokenizer_name",
    "lora_name",
    "model_type",
    "lm_gen_config",
    "tts_config",
    "stt_config",
    "model_id",
)
_LINEARS_RE = re.compile(r"^linears\.(\d+)\.weight$")
_SLICED_FORMAT = "personaplex-server/dep_q8/v1"


@dataclass
class ModelFiles:
    lm: Path
    mimi: Path
    tokenizer: Path
    lm_kwargs: dict[str, Any]
    mimi_config: dict[str, Any] | None
    model_name: str


def resolve_files(model_dir: Path) -> ModelFiles:
    """Find the model files in a folder laid out like the HF repo; explain what is missing."""
    if not model_dir.is_dir():
        raise EngineLoadError(
            f"model folder {model_dir} does not exist: download nvidia/personaplex-7b-v1 there "
            "(or run `personaplex-server make-tiny-model DIR` for a tiny test model)"
        )
    raw: dict[str, Any] = {}
    cfg_path = model_dir / C.CONFIG_FILE
    if cfg_path.is_file():
        try:
            raw = json.loads(cfg_path.read_text())
        except (OSError, ValueError) as exc:
            raise EngineLoadError(f"cannot read {cfg_path}: {exc}") from exc
    if isinstance(raw, dict) and "dim" in raw and "n_q" in raw:
        # upstream moshi's convention: config.json holds the LMModel kwargs and file names
        lm_kwargs = {k: v for k, v in raw.items() if k not in _NON_LM_KEYS}
    else:
        lm_kwargs = dict(loaders._lm_kwargs)  # moshiko, the architecture PersonaPlex keeps
    names = raw if isinstance(raw, dict) else {}
    lm = model_dir / str(names.get("moshi_name", C.LM_FILE))
    mimi = model_dir / str(names.get("mimi_name", C.MIMI_FILE))
    tok = model_dir / str(names.get("tokenizer_name", C.TOKENIZER_FILE))
    mimi_config = None
    if names.get("mimi_config_name"):
        mc = model_dir / str(names["mimi_config_name"])
        try:
            mimi_config = json.loads(mc.read_text())
        except (OSError, ValueError) as exc:
            raise EngineLoadError(f"cannot read Mimi config {mc}: {exc}") from exc
    missing = [p.name for p in (lm, mimi, tok) if not p.is_file()]
    if missing:
        raise EngineLoadError(
            f"model folder {model_dir} lacks {', '.join(missing)}: fetch the files of "
            "nvidia/personaplex-7b-v1 (accept its license on Hugging Face first)"
        )
    return ModelFiles(lm, mimi, tok, lm_kwargs, mimi_config, model_dir.name)


# --------------------------------------------------------------------------------------
# dep_q 16 -> 8


def prune_depformer_layer(layer: Any, dep_q: int) -> None:
    """Keep the first ``dep_q`` per-step weights of one depth-transformer layer."""
    attn = layer.self_attn
    if len(attn.in_projs) > 1:
        attn.in_projs = nn.ModuleList(list(attn.in_projs)[:dep_q])
        attn.out_projs = nn.ModuleList(list(attn.out_projs)[:dep_q])
        attn.weights_per_step = dep_q
        attn.mult = dep_q
    if isinstance(layer.gating, nn.ModuleList) and len(layer.gating) > 1:
        layer.gating = nn.ModuleList(list(layer.gating)[:dep_q])
    if layer.weights_per_step:
        layer.weights_per_step = dep_q


def prune_lm_root(lm: LMModel, dep_q: int) -> None:
    """Drop the user half of the LM-level depth modules and set ``lm.dep_q``."""
    lm.linears = nn.ModuleList(list(lm.linears)[:dep_q])
    if lm.depformer_multi_linear and len(lm.depformer_in) > 1:
        lm.depformer_in = nn.ModuleList(list(lm.depformer_in)[:dep_q])
    assert lm.depformer_emb is not None
    lm.depformer_emb = nn.ModuleList(list(lm.depformer_emb)[: dep_q - 1])
    lm.depformer_norms = nn.ModuleList(list(lm.depformer_norms)[:dep_q])
    lm.dep_q = dep_q


_STEP_RE = re.compile(
    r"(?:^|\.)(in_projs|out_projs|gating|linears|depformer_in|depformer_norms)"
    r"\.(\d+)\."
)
_EMB_RE = re.compile(r"^depformer_emb\.(\d+)\.")


def is_user_half(key: str) -> bool:
    """A weight only the user's codebooks use (dropped at run time): a checkpoint may lack it."""
    if (m := _EMB_RE.match(key)) is not None:
        return int(m.group(1)) >= C.AGENT_DEP_Q - 1
    m2 = _STEP_RE.search(key)
    if m2 is None or (
        m2.group(1) in ("in_projs", "out_projs", "gating") and not key.startswith("depformer.")
    ):
        return False
    return int(m2.group(2)) >= C.AGENT_DEP_Q


def checkpoint_dep_q(keys: list[str]) -> int:
    idx = [int(m.group(1)) for k in keys if (m := _LINEARS_RE.match(k))]
    if not idx:
        raise EngineLoadError("the LM checkpoint has no depth-transformer output layers")
    return max(idx) + 1


def _blocks(lm: LMModel) -> list[tuple[str, nn.Module]]:
    out: list[tuple[str, nn.Module]] = [
        (f"transformer.layers.{i}.", layer) for i, layer in enumerate(lm.transformer.layers)
    ]
    assert lm.depformer is not None
    out += [(f"depformer.layers.{i}.", layer) for i, layer in enumerate(lm.depformer.layers)]
    return out


# --------------------------------------------------------------------------------------
# streaming safetensors writer (the sliced copy is written layer by layer)

_ST_DTYPES = {
    torch.bfloat16: "BF16",
    torch.float16: "F16",
    torch.float32: "F32",
    torch.int64: "I64",
    torch.int8: "I8",
    torch.uint8: "U8",
}


class SafetensorsStreamWriter:
    """Writes a safetensors file whose header is known up front, tensor by tensor."""

    def __init__(
        self,
        path: Path,
        entries: list[tuple[str, torch.dtype, tuple[int, ...]]],
        metadata: dict[str, str],
    ) -> None:
        self.path = path
        self._order = [name for name, _, _ in entries]
        self._spec = {name: (dtype, shape) for name, dtype, shape in entries}
        header: dict[str, Any] = {"__metadata__": metadata}
        offset = 0
        for name, dtype, shape in entries:
            n = _numel(shape) * torch.empty((), dtype=dtype).element_size()
            header[name] = {
                "dtype": _ST_DTYPES[dtype],
                "shape": list(shape),
                "data_offsets": [offset, offset + n],
            }
            offset += n
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * ((8 - len(raw) % 8) % 8)
        self._fh: BinaryIO = open(path, "wb")  # noqa: SIM115 (closed in close/abort)
        self._fh.write(len(raw).to_bytes(8, "little"))
        self._fh.write(raw)
        self._next = 0

    def write(self, name: str, tensor: torch.Tensor) -> None:
        expected = self._order[self._next]
        if name != expected:
            raise RuntimeError(f"sliced checkpoint: expected {expected}, got {name}")
        dtype, shape = self._spec[name]
        if tensor.dtype != dtype or tuple(tensor.shape) != shape:
            raise RuntimeError(f"sliced checkpoint: {name} has {tensor.dtype}{tuple(tensor.shape)}")
        data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
        self._fh.write(data.data)
        self._next += 1

    def close(self) -> None:
        self._fh.close()
        if self._next != len(self._order):
            raise RuntimeError("sliced checkpoint: not every tensor was written")

    def abort(self) -> None:
        self._fh.close()
        self.path.unlink(missing_ok=True)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def source_fingerprint(path: Path) -> str:
    """Size + sha256 of the safetensors header: cheap, changes when the file changes."""
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        head = fh.read(n)
    return f"{path.stat().st_size}:{hashlib.sha256(head).hexdigest()[:32]}"


def sliced_path_for(lm_path: Path) -> Path:
    return lm_path.with_name(C.SLICED_LM_FILE)


def valid_sliced(lm_path: Path) -> Path | None:
    """The sliced copy next to ``lm_path`` if it exists and was made from this file."""
    sliced = sliced_path_for(lm_path)
    if not sliced.is_file():
        return None
    try:
        with safe_open(str(sliced), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # a truncated or foreign file: ignore it, rewrite later
        log.warning("ignoring unreadable sliced weights %s: %s", sliced, exc)
        return None
    if meta.get("format") != _SLICED_FORMAT or meta.get("source") != source_fingerprint(lm_path):
        log.warning("ignoring sliced weights %s: made from another checkpoint", sliced)
        return None
    return sliced


# --------------------------------------------------------------------------------------
# the LM


@dataclass
class LoadedLM:
    lm: LMModel
    source: Path
    checkpoint_dep_q: int
    sliced_written: Path | None


def load_lm(
    files: ModelFiles,
    *,
    device: torch.device,
    dtype: torch.dtype,
    quantize: str,
    sliced_weights: bool = False,
    progress: Callable[[str], None] | None = None,
) -> LoadedLM:
    """Load the LM as dep_q=8 on ``device`` in ``dtype`` with optional quantization."""
    source = files.lm
    if sliced_weights and (s := valid_sliced(files.lm)) is not None:
        source = s
        log.info("loading the sliced dep_q=8 weights %s", s)
    with safe_open(str(source), framework="pt", device="cpu") as f:
        keys = list(f.keys())
        ck_dep_q = checkpoint_dep_q(keys)
        if ck_dep_q < C.AGENT_DEP_Q:
            raise EngineLoadError(
                f"{source.name} has dep_q={ck_dep_q}; PersonaPlex needs at least "
                f"{C.AGENT_DEP_Q} (is this a PersonaPlex/Moshi checkpoint?)"
            )
        kwargs = dict(files.lm_kwargs)
        kwargs["dep_q"] = ck_dep_q
        kwargs.pop("quantize", None)
        kwargs.pop("depformer_causal", None)  # deprecated upstream, as get_moshi_lm does
        lm = LMModel(device="meta", dtype=dtype, **kwargs)
        writer = None
        if sliced_weights and source == files.lm:
            writer = _open_sliced_writer(files, ck_dtype=f.get_slice(keys[0]).get_dtype())
        try:
            _load_blocks(f, keys, lm, ck_dep_q, device, dtype, quantize, writer, progress)
            if writer is not None:
                writer.close()
                final = sliced_path_for(files.lm)
                os.replace(writer.path, final)
                log.info("wrote sliced dep_q=8 weights to %s", final)
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
    lm.eval()
    return LoadedLM(lm, source, ck_dep_q, sliced_path_for(files.lm) if writer else None)


def _open_sliced_writer(files: ModelFiles, ck_dtype: str) -> SafetensorsStreamWriter | None:
    final = sliced_path_for(files.lm)
    tmp = final.with_name(final.name + ".partial")
    need = int(files.lm.stat().st_size * 0.95)
    try:
        free = shutil.disk_usage(final.parent).free
    except OSError:
        free = 0
    if free < need:
        log.warning(
            "not writing sliced weights: %s has %.1f GB free, about %.1f GB needed",
            final.parent,
            free / 1e9,
            need / 1e9,
        )
        return None
    st_dtype = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}.get(ck_dtype)
    if st_dtype is None:
        log.warning("not writing sliced weights: unexpected checkpoint dtype %s", ck_dtype)
        return None
    kwargs = dict(files.lm_kwargs)
    kwargs["dep_q"] = C.AGENT_DEP_Q
    kwargs.pop("quantize", None)
    kwargs.pop("depformer_causal", None)
    target = LMModel(device="meta", dtype=st_dtype, **kwargs)
    sd = target.state_dict()
    entries: list[tuple[str, torch.dtype, tuple[int, ...]]] = []
    for prefix, _ in _blocks(target):
        entries += [(k, v.dtype, tuple(v.shape)) for k, v in sd.items() if k.startswith(prefix)]
    block_keys = {e[0] for e in entries}
    entries += [(k, v.dtype, tuple(v.shape)) for k, v in sd.items() if k not in block_keys]
    meta = {"format": _SLICED_FORMAT, "source": source_fingerprint(files.lm)}
    try:
        return SafetensorsStreamWriter(tmp, entries, meta)
    except OSError as exc:
        log.warning("not writing sliced weights to %s: %s", final.parent, exc)
        return None


def _load_blocks(
    f: Any,
    keys: list[str],
    lm: LMModel,
    ck_dep_q: int,
    device: torch.device,
    dtype: torch.dtype,
    quantize: str,
    writer: SafetensorsStreamWriter | None,
    progress: Callable[[str], None] | None,
) -> None:
    blocks = _blocks(lm)
    in_block: set[str] = set()
    for i, (prefix, block) in enumerate(blocks):
        sub_keys = [k for k in keys if k.startswith(prefix)]
        in_block.update(sub_keys)
        state = {k[len(prefix) :]: f.get_tensor(k) for k in sub_keys}
        try:
            missing, unexpected = block.load_state_dict(state, strict=False, assign=True)
        except RuntimeError as exc:  # shape mismatches
            raise EngineLoadError(
                f"checkpoint does not match the model at {prefix}: {exc}"
            ) from exc
        bad = [k for k in missing if not is_user_half(prefix + k)]
        if bad or unexpected:
            raise EngineLoadError(
                f"checkpoint does not match the model at {prefix}: "
                f"missing {bad[:5]}, unexpected {list(unexpected)[:5]}"
            )
        del state
        if prefix.startswith("depformer.") and ck_dep_q > C.AGENT_DEP_Q:
            prune_depformer_layer(block, C.AGENT_DEP_Q)
        if writer is not None:
            for k, v in block.state_dict().items():
                writer.write(prefix + k, v)
        _finish_module(block, device, dtype, quantize)
        if progress is not None:
            progress(f"loaded {prefix.rstrip('.')} ({i + 1}/{len(blocks)} layers)")
    rest = {k: f.get_tensor(k) for k in keys if k not in in_block}
    missing, unexpected = lm.load_state_dict(rest, strict=False, assign=True)
    del rest
    bad_missing = [
        k for k in missing if not any(k.startswith(p) for p, _ in blocks) and not is_user_half(k)
    ]
    if bad_missing or unexpected:
        raise EngineLoadError(
            "checkpoint does not match the PersonaPlex architecture: "
            f"missing {bad_missing[:5]}, unexpected {list(unexpected)[:5]}"
        )
    if ck_dep_q > C.AGENT_DEP_Q:
        prune_lm_root(lm, C.AGENT_DEP_Q)
    if writer is not None:
        done = {prefix + k for prefix, b in blocks for k in b.state_dict()}
        for k, v in lm.state_dict().items():
            if k not in done:
                writer.write(k, v)
    # what is left on the host: embeddings, norms, the text head, depth-transformer heads
    for _, child in lm.named_children():
        if child is lm.transformer or child is lm.depformer:
            continue
        _finish_module(child, device, dtype, quantize, quantize_now=False)
    for mod in (lm.transformer, lm.depformer):
        assert mod is not None
        for name, p in list(mod.named_parameters(recurse=False)):
            setattr(mod, name, nn.Parameter(_cast(p.data, dtype).to(device), requires_grad=False))
    if quantize in ("int8", "nf4"):
        quantize_linears(lm, quantize)  # skips the layers quantized already
    lm.to(device)  # buffers, if any (no dtype: int8 scales must stay float32)
    leftover = [n for n, p in lm.named_parameters() if p.device.type == "meta"]
    if leftover:
        raise EngineLoadError(f"checkpoint lacks weights for {leftover[:5]}")


def _cast(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return t.to(dtype) if t.dtype.is_floating_point else t


def _finish_module(
    module: nn.Module,
    device: torch.device,
    dtype: torch.dtype,
    quantize: str,
    quantize_now: bool = True,
) -> None:
    """Cast to the runtime dtype, move to the device, quantize the linear layers there."""
    for p in module.parameters():
        p.requires_grad_(False)
    if quantize in ("int8", "nf4"):
        module.to(device=device, dtype=torch.float16)
        if quantize_now:
            quantize_linears(module, quantize)
    else:
        module.to(device=device, dtype=dtype)


# --------------------------------------------------------------------------------------
# Mimi and the text tokenizer


def load_mimi(files: ModelFiles, device: torch.device) -> MimiModel:
    try:
        mimi = loaders.get_mimi(
            files.mimi, files.mimi_config, device=device, num_codebooks=C.AUDIO_CODEBOOKS
        )
    except RuntimeError as exc:
        raise EngineLoadError(f"cannot load Mimi from {files.mimi}: {exc}") from exc
    mimi.eval()
    return mimi


def load_tokenizer(files: ModelFiles) -> Any:
    import sentencepiece

    try:
        return sentencepiece.SentencePieceProcessor(model_file=str(files.tokenizer))
    except (OSError, RuntimeError) as exc:
        raise EngineLoadError(f"cannot load the tokenizer {files.tokenizer}: {exc}") from exc
