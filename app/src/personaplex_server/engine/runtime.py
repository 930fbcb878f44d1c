"""The PersonaPlex runtime: one LMGen with a batch of ``max_sessions`` slots, one Mimi.

A session owns a slot. :meth:`Engine.step_batch` steps several conversations in one call:
one batched Mimi encode, one LM step and one Mimi decode over all slots, where upstream's
exec_mask leaves the slots that are not in this step alone (their state does not move).
Mimi's streaming state is batched over the slots the same way. Each slot samples with its
own parameters and random stream (:mod:`.sampling`), so a conversation's output does not
depend on which others share its step.

Prompt phase, two equivalent ways (``prefill``):
- prefill (default): every forced column but the last goes through the temporal
  transformer in chunks of up to ``PREFILL_CHUNK`` frames (voice ``.pt`` embeddings and
  prompt tokens alike), then the token cache is set as the step-by-step path leaves it,
  and one transition step runs. Fast: a few LM calls instead of one per frame.
- step by step (``prefill=False``): upstream ``LMGen.step`` once per frame with the
  text/audio hooks forcing the sampled tokens; step s forces column s+1. Kept as the
  reference the tests compare against.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import constants as C
from . import sampling
from .loading import ModelFiles, load_lm, load_mimi, load_tokenizer, resolve_files
from .planning import (
    GIB,
    GpuSpec,
    ModelSpec,
    PlanError,
    PrecisionPlan,
    plan_auto_sessions,
    plan_precision,
)
from .prompt import PromptFrames, build_prompt, fork_columns, wrap_with_system_tags
from .quant import module_bytes
from .step_graph import StepGraph
from .types import (
    ContextExhausted,
    ContextMode,
    EngineConfig,
    EngineLoadError,
    NoFreeSlot,
    NonFiniteStep,
    SamplingParams,
    StepOutput,
    VoiceNotFound,
)
from .window import PIN_REFRESH_FRAMES, WindowKVCache, install_masked
from .window import install as install_window

log = logging.getLogger(__name__)

PREFILL_CHUNK = 64
TINY_PARAMS = 50_000_000
MAX_VOICE_SECONDS = 60.0
# max_sessions auto: the step of all slots must leave 20 % of the frame for the server
AUTO_STEP_BUDGET_MS = 64.0
AUTO_CPU_START = 8  # CPU (tiny models): no memory plan; start here, shrink by step time
# RoPE positions are float32: integers are exact up to 2**24 frames (about 372 hours)
ENDLESS_FRAMES = 2**24
_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass
class _Voice:
    codes: torch.Tensor | None  # [F, 8] agent codes (audio voices)
    embeddings: torch.Tensor | None  # [F-1, dim] (``.pt`` voices)
    cache: torch.Tensor | None  # [17, K] the fork's token ring buffer
    frames: int


class EngineSession:
    """One conversation in one slot. Not thread-safe: drive it from one thread."""

    def __init__(
        self,
        engine: Engine,
        slot: int,
        voice: str,
        text_tokens: list[int],
        sampling: SamplingParams,
    ) -> None:
        self._engine = engine
        self.slot = slot
        self.voice = voice
        self.text_tokens = text_tokens
        self.sampling = sampling
        self.frames_used = 0
        self.prompt_frames = 0
        self.prompted = False
        self.closed = False
        self.seed: int | None = None  # the seed in use (drawn at random when not given)
        self.pin_valid_until = 0  # first frame that needs the pinned prompt moved again
        self._parts: Iterator[None] | None = None  # the prompt in progress, part by part

    @property
    def frames_left(self) -> int:
        return max(0, self._engine.max_frames - self.frames_used)

    def run_prompt(self) -> None:
        self._engine._run_prompt(self)

    def run_prompt_part(self) -> bool:
        """One part of the prompt (the server interleaves them with other sessions'
        steps, so a joining conversation never stalls the others); True when done."""
        return self._engine._prompt_part(self)

    def step(self, pcm: np.ndarray) -> StepOutput:
        out = self._engine._step(self, pcm)
        if out.error is not None:
            raise out.error
        return out

    def close(self) -> None:
        self._engine._release(self)

    def __enter__(self) -> EngineSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Engine:
    frame_size: int = C.FRAME_SIZE
    sample_rate: int = C.SAMPLE_RATE

    def __init__(
        self,
        cfg: EngineConfig,
        files: ModelFiles,
        lm: Any,
        mimi: Any,
        tokenizer: Any,
        device: torch.device,
        plan: PrecisionPlan,
        info: dict[str, Any],
    ) -> None:
        from moshi.models.lm import LMGen

        self.cfg = cfg
        self.files = files
        self.lm = lm
        self.mimi = mimi
        self.tokenizer = tokenizer
        self.device = device
        self.plan = plan
        self.info = info
        self.prefill = True
        self.voices_dir = cfg.voices_dir or (cfg.model_dir / C.VOICES_DIR)
        self._lock = threading.RLock()
        self._voice_cache: dict[tuple[str, int, int], _Voice] = {}
        self._forcing = False
        sampling.install()
        self.lm_gen = LMGen(
            lm,
            use_sampling=True,
            on_text_hook=self._on_text,
            on_audio_hook=self._on_audio,
            support_out_of_sync=True,
        )
        if lm.context is None:
            raise EngineLoadError("the LM has no context length (config.json lacks 'context')")
        if cfg.max_sessions == "auto":
            batch = plan.sessions if device.type == "cuda" else AUTO_CPU_START
        else:
            batch = int(cfg.max_sessions)
        self._init_slots(batch)
        self.context = int(lm.context)
        self.context_mode: ContextMode = cfg.context_mode
        # pinned: the prompt keeps at most half the window, the conversation the rest
        self.max_pinned_frames = self.context // 2
        self.max_frames = self.context if cfg.context_mode == "stop" else ENDLESS_FRAMES
        self.info["max_frames"] = self.max_frames
        self.info["context_mode"] = cfg.context_mode

    def _init_slots(self, b: int) -> None:
        """Streaming state for ``b`` slots: one LM batch and one Mimi batch of ``b``."""
        device = self.device
        self.batch = b
        self._slots: list[EngineSession | None] = [None] * b
        self._force_text = torch.full((b,), -1, dtype=torch.long, device=device)
        self._force_audio = torch.full((b, 8), -1, dtype=torch.long, device=device)
        self._sampler = sampling.SlotSampler(b, device)
        self._exec_mask: torch.Tensor | None = None
        self._poisoned: set[int] = set()  # slots whose state saw non-finite values
        with self._ctx():
            self.lm_gen.streaming_forever(b)
            # one Mimi streaming state for all slots: one encode and one decode per step
            self.mimi.streaming_forever(b)
            self._windows: list[WindowKVCache] = install_window(self.lm)
            self._mimi_windows = install_masked(self.mimi)
        self._mimi_slots: tuple[int, ...] | None = None
        # after the caches are installed: the pins list the tensors the steps will use
        self._step_graph = (
            StepGraph(
                self._step_body,
                [self.lm_gen, self.mimi],
                enabled=device.type == "cuda" and self.cfg.use_cuda_graphs,
            )
            if self.cfg.cuda_graph_scope == "step"
            else None
        )
        self.info["capacity"] = b

    def resize(self, sessions: int) -> None:
        """Rebuild the streaming state for ``sessions`` slots (all slots must be free)."""
        with self._lock:
            if any(s is not None for s in self._slots):
                raise RuntimeError("resize needs every slot free")
            self.lm_gen._stop_streaming()
            self.lm._stop_streaming()  # LMGen streams its LM as a detached module
            self.mimi._stop_streaming()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            self._init_slots(sessions)

    def fit_capacity(self, budget_ms: float = AUTO_STEP_BUDGET_MS, frames: int = 6) -> str:
        """``max_sessions: auto``, second half: time full-batch steps (every slot talking)
        and shrink the batch while the step is over ``budget_ms``. The step's cost grows
        about linearly with the batch above a fixed part, so scaling the batch by
        budget/time is conservative. Returns the reason, also in ``info``."""
        from .types import SamplingParams as _Sp

        reasons = []
        while True:
            with self._lock:
                sessions = []
                for slot in range(self.batch):
                    s = EngineSession(self, slot, "", [], _Sp(seed=slot))
                    self._slots[slot] = s
                    voice = _Voice(torch.tensor([C.SILENCE_TOKENS] * 4), None, None, 4)
                    self._prompt_with(s, voice)
                    sessions.append(s)
                zeros = np.zeros(self.frame_size, dtype=np.float32)
                times = []
                try:
                    for _ in range(frames):
                        t0 = time.perf_counter()
                        self.step_batch([(s, zeros) for s in sessions])
                        times.append((time.perf_counter() - t0) * 1000)
                finally:
                    for s in sessions:
                        self._release(s)
            step_ms = sorted(times)[len(times) // 2]
            reasons.append(f"{self.batch} slot(s): {step_ms:.1f} ms per step")
            if step_ms <= budget_ms or self.batch == 1:
                break
            self.resize(max(1, min(self.batch - 1, int(self.batch * budget_ms / step_ms))))
        why = "; ".join(reasons) + f" (budget {budget_ms:.0f} ms of the 80 ms frame)"
        self.info["capacity_reason"] = why
        log.info("max_sessions auto: capacity %d (%s)", self.batch, why)
        return why

    # ---------------------------------------------------------------- loading
    @classmethod
    def load(cls, cfg: EngineConfig) -> Engine:
        t0 = time.perf_counter()
        auto = cfg.max_sessions == "auto"
        if not auto and int(cfg.max_sessions) < 1:
            raise EngineLoadError("max_sessions must be at least 1 (or auto)")
        device = resolve_device(cfg.device)
        files = resolve_files(Path(cfg.model_dir))
        spec = model_spec(files)
        gpu = gpu_spec(device) if device.type == "cuda" else None
        try:
            if auto:
                plan = plan_auto_sessions(gpu, dtype=cfg.dtype, quantize=cfg.quantize, spec=spec)
            else:
                plan = plan_precision(
                    gpu,
                    dtype=cfg.dtype,
                    quantize=cfg.quantize,
                    max_sessions=int(cfg.max_sessions),
                    spec=spec,
                )
        except PlanError as exc:
            raise EngineLoadError(str(exc)) from None
        log.info(
            "precision: %s + quantize %s (%s); estimated %.2f GiB for %d session(s)",
            plan.dtype,
            plan.quantize,
            plan.reason,
            plan.estimate_bytes / GIB,
            plan.sessions,
        )
        if plan.quantize != "none":
            _require_bitsandbytes(plan.quantize)
        dtype = _DTYPES[plan.dtype]
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        try:
            loaded = load_lm(
                files,
                device=device,
                dtype=dtype,
                quantize=plan.quantize,
                sliced_weights=cfg.sliced_weights,
                progress=lambda m: log.debug("%s", m),
            )
        except torch.OutOfMemoryError as exc:
            raise EngineLoadError(
                f"out of GPU memory while loading ({plan.dtype}+{plan.quantize}): {exc}. "
                "Try quantize=nf4, fewer max_sessions, or a bigger GPU"
            ) from None
        mimi = load_mimi(files, device)
        tokenizer = load_tokenizer(files)
        lm = loaded.lm
        n_params = sum(p.numel() for p in lm.parameters())
        if device.type == "cpu" and n_params < TINY_PARAMS and torch.get_num_threads() > 1:
            # a tiny model is Python-overhead bound: more threads only add contention
            log.info("tiny model on CPU (%d parameters): using 1 torch thread", n_params)
            torch.set_num_threads(1)
        if tokenizer.vocab_size() > lm.text_card:
            raise EngineLoadError(
                f"tokenizer has {tokenizer.vocab_size()} pieces, the LM only {lm.text_card}"
            )
        info: dict[str, Any] = {
            "model": files.model_name,
            "model_dir": str(cfg.model_dir),
            "device": str(device),
            "gpu": None
            if gpu is None
            else {
                "name": gpu.name,
                "total_gib": round(gpu.total_bytes / GIB, 2),
                "capability": f"{gpu.capability[0]}.{gpu.capability[1]}",
            },
            "dtype": plan.dtype,
            "quantize": plan.quantize,
            "capacity": plan.sessions,
            "checkpoint_dep_q": loaded.checkpoint_dep_q,
            "dep_q": int(lm.dep_q),
            "weights_file": loaded.source.name,
            "sliced_weights_written": None
            if loaded.sliced_written is None
            else str(loaded.sliced_written),
            "context_frames": lm.context,
            "frame_size": C.FRAME_SIZE,
            "sample_rate": C.SAMPLE_RATE,
            "cuda_graphs": cfg.use_cuda_graphs and device.type == "cuda" and _cuda_graphs_env_ok(),
            "cuda_graph_scope": cfg.cuda_graph_scope,
            "torch_compile": cfg.use_compile and not os.environ.get("NO_TORCH_COMPILE"),
            "memory": plan.as_info(),
            "versions": _versions(),
        }
        info["memory"]["weights_actual_gib"] = round(module_bytes(lm) / GIB, 3)
        engine = cls(cfg, files, lm, mimi, tokenizer, device, plan, info)
        if auto:
            engine.fit_capacity()
        engine._record_memory("after_load")
        log.info(
            "engine loaded in %.1f s: %s on %s, %s+%s, dep_q %d->%d, memory %s",
            time.perf_counter() - t0,
            files.model_name,
            device,
            plan.dtype,
            plan.quantize,
            loaded.checkpoint_dep_q,
            lm.dep_q,
            info["memory"],
        )
        return engine

    def _record_memory(self, label: str) -> None:
        if self.device.type != "cuda":
            return
        mem = self.info["memory"]
        mem[f"{label}_allocated_gib"] = round(torch.cuda.memory_allocated(self.device) / GIB, 2)
        mem[f"{label}_reserved_gib"] = round(torch.cuda.memory_reserved(self.device) / GIB, 2)
        mem["peak_allocated_gib"] = round(torch.cuda.max_memory_allocated(self.device) / GIB, 2)

    # ---------------------------------------------------------------- public API
    def voices(self) -> list[str]:
        d = self.voices_dir
        if not d.is_dir():
            return []
        ok = (C.EMBEDDING_VOICE_SUFFIX, *C.AUDIO_VOICE_SUFFIXES)
        return sorted(
            p.name
            for p in d.iterdir()
            if p.is_file() and p.suffix.lower() in ok and not p.name.startswith(".")
        )

    def new_session(self, voice: str, text_prompt: str, sampling: SamplingParams) -> EngineSession:
        if voice not in self.voices():  # bare names only: no paths, no traversal
            raise VoiceNotFound(f"unknown voice {voice!r}")
        sampling.validate()
        tokens = self.tokenize_prompt(text_prompt)
        with self._lock:
            try:
                slot = self._slots.index(None)
            except ValueError:
                raise NoFreeSlot(f"all {self.batch} session slot(s) are in use") from None
            session = EngineSession(self, slot, voice, tokens, sampling)
            self._slots[slot] = session
        return session

    def tokenize_prompt(self, text_prompt: str) -> list[int]:
        if not text_prompt.strip():
            return []
        ids: list[int] = self.tokenizer.encode(wrap_with_system_tags(text_prompt))
        return ids

    def warmup(self) -> None:
        """A few steps through every code path (and CUDA graph capture) on each slot."""
        t0 = time.perf_counter()
        with self._lock:
            for slot in range(self.batch):
                if self._slots[slot] is not None:
                    continue
                s = EngineSession(self, slot, "", [], SamplingParams())
                self._slots[slot] = s
                try:
                    voice = _Voice(torch.tensor([C.SILENCE_TOKENS] * 4), None, None, 4)
                    self._prompt_with(s, voice)
                    for _ in range(3):
                        self._step(s, np.zeros(self.frame_size, dtype=np.float32))
                finally:
                    self._slots[slot] = None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self._record_memory("after_warmup")
        log.info("warm-up done in %.2f s", time.perf_counter() - t0)

    # ---------------------------------------------------------------- internals
    @contextlib.contextmanager
    def _ctx(self) -> Iterator[None]:
        from moshi.utils.compile import no_compile, no_cuda_graph

        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.no_grad())
            if not self.cfg.use_compile:
                stack.enter_context(no_compile())
            if not self.cfg.use_cuda_graphs:
                stack.enter_context(no_cuda_graph())
            yield

    def _mimi_exec(self, slots: list[int]) -> None:
        """Only ``slots`` move in the next Mimi encode/decode (the others keep their state)."""
        key = tuple(slots)
        if self._mimi_slots != key:
            mask = torch.zeros(self.batch, dtype=torch.bool)
            mask[slots] = True
            self.mimi.set_exec_mask(mask.to(self.device))
            self._mimi_slots = key

    def _reset_mimi(self, slot: int) -> None:
        mask = torch.zeros(self.batch, dtype=torch.bool)
        mask[slot] = True
        self.mimi.reset_streaming(mask.to(self.device))
        self._mimi_slots = None  # a reset re-enables the slot in every exec mask

    def _on_text(self, text_token: torch.Tensor) -> None:
        if self._forcing:
            text_token.copy_(torch.where(self._force_text >= 0, self._force_text, text_token))

    def _on_audio(self, audio: torch.Tensor) -> None:
        if self._forcing:
            audio.copy_(torch.where(self._force_audio >= 0, self._force_audio, audio))

    def _check(self, session: EngineSession) -> None:
        if session.closed or self._slots[session.slot] is not session:
            raise RuntimeError("this session is closed")

    def _select(self, session: EngineSession) -> None:
        """Make ``session``'s slot the one that moves."""
        self._mimi_exec([session.slot])
        self._set_exec_slots([session.slot])

    def _set_exec_slots(self, slots: list[int]) -> None:
        if self.batch > 1:
            mask = torch.zeros(self.batch, dtype=torch.bool)
            mask[slots] = True
            if self._exec_mask is None:
                self._exec_mask = mask.to(self.device)
            else:  # in place: a captured step reads this very tensor
                self._exec_mask.copy_(mask)
            self.lm_gen.set_exec_mask(self._exec_mask)

    def _lm_step(self, inp: torch.Tensor, replace: torch.Tensor | None = None) -> Any:
        """One LMGen step with each slot's own random stream (see :mod:`.sampling`)."""
        with sampling.active(self._sampler):
            tokens = self.lm_gen.step(inp, depformer_replace_tokens=replace)
        self._sampler.advance(self._exec_mask)
        return tokens

    def _run_prompt(self, session: EngineSession) -> None:
        with self._lock:
            self._check(session)
            if session.prompted:
                raise RuntimeError("the prompt has already run for this session")
            voice = self._load_voice(session.voice, session.slot)
            self._prompt_with(session, voice)

    def _prompt_part(self, session: EngineSession) -> bool:
        """The next part of ``session``'s prompt (loading the voice, one prefill chunk, the
        last step); True once the prompt is done. Other sessions can step between parts."""
        with self._lock:
            self._check(session)
            if session._parts is None:
                if session.prompted:
                    raise RuntimeError("the prompt has already run for this session")
                voice = self._load_voice(session.voice, session.slot)
                session._parts = self._prompt_parts(session, voice)
                return False
            try:
                next(session._parts)
            except StopIteration:
                session._parts = None
                return True
            except BaseException:
                session._parts = None
                raise
            return False

    def _prompt_with(self, session: EngineSession, voice: _Voice) -> None:
        for _ in self._prompt_parts(session, voice):
            pass

    def _prompt_parts(self, session: EngineSession, voice: _Voice) -> Iterator[None]:
        """The prompt as a generator: each ``next`` runs one part under the lock's holder.
        Every part selects its slot again, as other slots may have stepped in between."""
        slot = session.slot
        with self._ctx():
            self._select(session)
            for w in self._windows:
                w.unpin_slot(slot)
            reset = torch.zeros(self.batch, dtype=torch.bool)
            reset[slot] = True
            self.lm_gen.reset_streaming(reset.to(self.device))
            if self.batch > 1:
                self._select(session)  # the reset re-enabled the slot: mask the others again
            if slot in self._poisoned:
                # NaN keys hidden by the mask still poison attention (NaN * 0): wipe them
                for w in (*self._windows, *self._mimi_windows):
                    w.cache[:, slot].zero_()
                self._poisoned.discard(slot)
            self._reset_mimi(slot)  # convolution buffers: reset by torch.where, NaN-proof
            self._select(session)
            session.seed = self._sampler.start(slot, session.sampling)
            codes = voice.codes
            if codes is None:  # .pt: only the last voice frame's codebooks 1-7 are needed
                assert voice.cache is not None
                codes = torch.zeros(voice.frames, 8, dtype=torch.long)
                codes[-1, 1:] = voice.cache[2:9, voice.frames % voice.cache.shape[1]]
            frames = build_prompt(codes, session.text_tokens)
            p = len(frames)
            limit = self.max_pinned_frames if self.context_mode == "pinned" else self.context - 1
            if p > limit:
                raise ValueError(
                    f"the prompt takes {p} frames, at most {limit} fit the model's context "
                    f"({self.context} frames): use a shorter voice prompt or text prompt"
                )
        if self.prefill or voice.embeddings is not None:
            yield from self._prefill_parts(session, frames, voice)
        else:
            for s in range(p):
                with self._ctx():
                    self._select(session)
                    self._forced_step(slot, frames, s)
                if s % PREFILL_CHUNK == PREFILL_CHUNK - 1:
                    yield
        with self._ctx():
            self._select(session)
            self._reset_mimi(slot)
            session.frames_used = p
            session.prompt_frames = p
            if bool(self._sampler.nonfinite[slot]):
                self._poisoned.add(slot)
                raise NonFiniteStep("the model produced non-finite values during the prompt")
            session.prompted = True
            if self.context_mode == "pinned":
                for w in self._windows:
                    w.pin_slot(slot, p)
                # with its prompt at its own positions the window holds until this frame
                session.pin_valid_until = self.context - PIN_REFRESH_FRAMES

    def _user_input(self, slot: int, codes: torch.Tensor) -> torch.Tensor:
        x = torch.zeros(self.batch, 8, 1, dtype=torch.long, device=self.device)
        x[slot, :, 0] = codes.to(self.device)
        return x

    def _forced_step(self, slot: int, frames: PromptFrames, s: int) -> None:
        """Upstream step ``s`` of the prompt: force column s+1 (the last step: codebooks 1-7)."""
        p = len(frames)
        self._force_text.fill_(-1)
        self._force_audio.fill_(-1)
        replace = None
        if s < p - 1:
            audio = torch.cat([frames.agent[s + 1, :1], frames.agent[s, 1:]])
            self._force_text[slot] = frames.text[s + 1]
            self._force_audio[slot] = audio.to(self.device)
            replace = torch.zeros(
                self.batch, self.lm.dep_q, 1, dtype=torch.long, device=self.device
            )
            replace[slot, :, 0] = audio.to(self.device)  # no need to run the depth transformer
        else:
            self._force_audio[slot, 1:] = frames.agent[s, 1:].to(self.device)
        self._forcing = True
        try:
            user = self._user_input(slot, frames.user[s])
            self._lm_step(user, replace)
        finally:
            self._forcing = False
            self._force_text.fill_(-1)
            self._force_audio.fill_(-1)

    def _prefill_parts(
        self, session: EngineSession, frames: PromptFrames, voice: _Voice
    ) -> Iterator[None]:
        """Feed columns 0..P-2 through the temporal transformer (a part per chunk), set
        the token cache, step P-1."""
        slot = session.slot
        lm = self.lm
        p = len(frames)
        cols = fork_columns(frames, p + 1, lm.text_initial_token_id, lm.initial_token_id)
        first_token_col = 0
        cond: torch.Tensor | None = None
        if voice.embeddings is not None:
            f = voice.frames
            first_token_col = f - 1
            cond = voice.embeddings.to(self.device, self.lm.dtype)
            cols[:, :first_token_col] = -1  # embeds to exactly zero; the embedding is added
            # the fork's cache holds the last voice columns as it played them
            assert voice.cache is not None
            ct = voice.cache.shape[1]
            cols[:, f - 1] = voice.cache[:, (f - 1) % ct]
            keep = [0, 1, 9]
            col_f = voice.cache[:, f % ct].clone()
            col_f[keep] = cols[keep, f]
            cols[:, f] = col_f
        n_in = p - 1  # columns fed before the transition step
        dim = lm.dim
        # eager: chunk lengths vary with every prompt, compiling them would recompile
        from moshi.utils.compile import no_compile

        for start in range(0, n_in, PREFILL_CHUNK):
            with self._ctx(), no_compile():
                self._select(session)
                end = min(n_in, start + PREFILL_CHUNK)
                seq = torch.full((self.batch, lm.num_codebooks, end - start), -1, dtype=torch.long)
                seq[slot] = cols[:, start:end]
                sum_cond = None
                if cond is not None and start < first_token_col:
                    sum_cond = torch.zeros(
                        self.batch, end - start, dim, dtype=cond.dtype, device=self.device
                    )
                    upto = min(end, first_token_col)
                    sum_cond[slot, : upto - start] = cond[start:upto]
                lm.forward_text(seq.to(self.device), sum_cond)
            yield
        with self._ctx():
            self._select(session)
            self._prefill_finish(slot, frames, cols)

    def _prefill_finish(self, slot: int, frames: PromptFrames, cols: torch.Tensor) -> None:
        p = len(frames)
        state = self.lm_gen._streaming_state
        assert state is not None
        ct = state.cache.shape[2]
        state.offsets[slot] = p - 1
        # column P-1 is what the transition step reads; it writes all of column P itself
        state.cache[slot, :, (p - 1) % ct] = cols[:, p - 1].to(self.device)
        self._forced_step(slot, frames, p - 1)

    def step_batch(self, items: list[tuple[EngineSession, np.ndarray]]) -> list[StepOutput]:
        """One frame for several sessions in one batched step (Mimi encode, LM, Mimi
        decode), whatever their sampling parameters: each slot samples with its own
        parameters and random stream, so the result is what each gives alone. A session
        whose step produced non-finite values gets an output with ``error`` set (it must
        end); the others are not affected. Every session is checked (open, prompted,
        context left, frame size) before anything runs: on an error nothing has moved,
        and the caller can retry without that session."""
        if len({id(s) for s, _ in items}) != len(items):
            raise ValueError("a session appears twice in one batch")
        with self._lock:
            for session, pcm in items:
                self._validate(session, pcm)
            return self._step_group([s for s, _ in items], [p for _, p in items])

    def _step(self, session: EngineSession, pcm: np.ndarray) -> StepOutput:
        with self._lock:
            return self._step_group([session], [pcm])[0]

    def _step_group(
        self, sessions: list[EngineSession], pcms: list[np.ndarray]
    ) -> list[StepOutput]:
        """One frame for ``sessions``: one batched Mimi encode, one LM step, one batched
        Mimi decode over all slots (the others masked out), and one copy to the host."""
        frames = [self._validate(s, p) for s, p in zip(sessions, pcms, strict=True)]
        slots = [s.slot for s in sessions]
        wav = np.zeros((self.batch, 1, self.frame_size), dtype=np.float32)
        for slot, frame in zip(slots, frames, strict=True):
            wav[slot, 0] = frame
        with self._ctx():
            self._refresh_pins(sessions)
            self._set_exec_slots(slots)
            self._mimi_exec(slots)
            wav_in = torch.from_numpy(wav).to(self.device)
            step = self._step_graph or self._step_body
            packed = step(wav_in).cpu()
        host = packed.numpy()
        results = []
        for session in sessions:
            row = host[session.slot]
            p = row[: self.frame_size].copy()
            session.frames_used += 1
            if row[-1] != 0 or not np.isfinite(p).all():
                self._poisoned.add(session.slot)
                err = NonFiniteStep(
                    f"the model produced non-finite values at frame {session.frames_used} "
                    f"({self.plan.dtype}); this conversation cannot continue"
                )
                log.error("slot %d: %s", session.slot, err)
                results.append(StepOutput(pcm=None, text=None, error=err))
            else:
                results.append(StepOutput(pcm=p, text=self._piece(int(row[self.frame_size]))))
        return results

    def _step_body(self, wav: torch.Tensor) -> torch.Tensor:
        """Mimi encode, LM step, Mimi decode for all slots (the masked ones keep their
        state), packed as [B, frame + 2]: audio, text id, non-finite flag. Device work
        only, no host read: with ``cuda_graph_scope: step`` this is what is captured."""
        codes = self.mimi.encode(wav)  # [B, 8, 1]
        tokens = self._lm_step(codes)
        assert tokens is not None
        # masked slots (and the first frames) come back as -2: decode zeros there
        audio = tokens[:, 1 : 1 + C.AUDIO_CODEBOOKS].clamp_min(0)
        pcm = self.mimi.decode(audio)[:, 0].float()  # [B, frame]
        flags = self._sampler.nonfinite.float()[:, None]
        return torch.cat([pcm, tokens[:, 0].float(), flags], dim=1)  # ids < 2**24: exact

    def _refresh_pins(self, sessions: list[EngineSession]) -> None:
        """Move each pinned prompt to just before its slot's window for the next
        ``PIN_REFRESH_FRAMES`` frames (see :mod:`.window`)."""
        if self.context_mode != "pinned":
            return
        for s in sessions:
            if s.frames_used < s.pin_valid_until:
                continue
            # queries up to frames_used + R - 1 must see the prompt's first key < context back
            shift = max(0, s.frames_used + PIN_REFRESH_FRAMES - self.context)
            for w in self._windows:
                w.shift_pinned(s.slot, shift)
            s.pin_valid_until = s.frames_used + PIN_REFRESH_FRAMES

    def _validate(self, session: EngineSession, pcm: np.ndarray) -> np.ndarray:
        self._check(session)
        if not session.prompted:
            raise RuntimeError("run_prompt() must come before step()")
        if session.slot in self._poisoned:
            raise NonFiniteStep("this conversation's model state is invalid (non-finite)")
        if session.frames_used >= self.max_frames:
            raise ContextExhausted(
                f"the conversation used the model's whole context ({self.max_frames} frames, "
                f"{self.max_frames / C.FRAME_RATE:.0f} s; context_mode={self.context_mode})"
            )
        x = np.asarray(pcm, dtype=np.float32).reshape(-1)
        if x.shape[0] != self.frame_size:
            raise ValueError(f"expected {self.frame_size} samples, got {x.shape[0]}")
        return np.clip(x, -1.0, 1.0)

    def _piece(self, text_id: int) -> str | None:
        if text_id in (C.TEXT_EPAD_ID, C.TEXT_PAD_ID) or text_id < 0:
            return None
        if text_id >= self.tokenizer.vocab_size():
            return None
        piece: str = self.tokenizer.id_to_piece(text_id)
        return piece.replace("▁", " ")

    def _release(self, session: EngineSession) -> None:
        with self._lock:
            if not session.closed and self._slots[session.slot] is session:
                self._slots[session.slot] = None
            session.closed = True

    # ---------------------------------------------------------------- voices
    def _load_voice(self, name: str, slot: int) -> _Voice:
        path = self.voices_dir / name
        if name not in self.voices():
            raise VoiceNotFound(f"unknown voice {name!r}")
        st = path.stat()
        key = (name, st.st_mtime_ns, st.st_size)
        cached = self._voice_cache.get(key)
        if cached is not None:
            return cached
        if path.suffix == C.EMBEDDING_VOICE_SUFFIX:
            voice = self._load_pt_voice(path)
        else:
            voice = self._encode_audio_voice(path, slot)
        self._voice_cache = {k: v for k, v in self._voice_cache.items() if k[0] != name}
        self._voice_cache[key] = voice
        return voice

    def _load_pt_voice(self, path: Path) -> _Voice:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
            emb = data["embeddings"]
            cache = data["cache"]
        except Exception as exc:
            raise ValueError(
                f"voice {path.name} is not a PersonaPlex voice embedding: {exc}"
            ) from None
        if emb.dim() != 4 or emb.shape[-1] != self.lm.dim or emb.shape[0] < 1:
            raise ValueError(
                f"voice {path.name}: embeddings of shape {tuple(emb.shape)} do not "
                f"fit this model (dim {self.lm.dim})"
            )
        if cache.dim() != 3 or cache.shape[1] != self.lm.num_codebooks or cache.shape[2] < 2:
            raise ValueError(f"voice {path.name}: cache of shape {tuple(cache.shape)} unexpected")
        f = int(emb.shape[0]) + 1
        return _Voice(None, emb.reshape(f - 1, -1), cache[0].long(), f)

    def _encode_audio_voice(self, path: Path, slot: int) -> _Voice:
        import sphn

        from .loudness import normalize_loudness

        try:
            pcm, sr = sphn.read(str(path))
        except Exception as exc:
            raise ValueError(f"cannot read voice audio {path.name}: {exc}") from None
        pcm = np.asarray(pcm, dtype=np.float32)
        pcm = pcm[0:1] if pcm.ndim == 2 else pcm.reshape(1, -1)
        if int(sr) != C.SAMPLE_RATE:
            pcm = sphn.resample(pcm, src_sample_rate=int(sr), dst_sample_rate=C.SAMPLE_RATE)
        mono = np.asarray(pcm, dtype=np.float32).reshape(-1)
        if mono.shape[0] > MAX_VOICE_SECONDS * C.SAMPLE_RATE:
            raise ValueError(f"voice {path.name} is longer than {MAX_VOICE_SECONDS:.0f} s")
        mono = normalize_loudness(mono, C.SAMPLE_RATE, C.VOICE_PROMPT_LUFS)
        codes = self.encode_audio(mono, slot)
        return _Voice(codes, None, None, int(codes.shape[0]))

    def encode_audio(self, mono: np.ndarray, slot: int) -> torch.Tensor:
        """Mimi codes ``[F, 8]`` of a 24 kHz mono signal (zero-padded to whole frames),
        from a fresh Mimi state of ``slot`` (a slot not in conversation: its state is reset)."""
        n = -(-mono.shape[0] // self.frame_size)
        if n < 2:
            raise ValueError("a voice prompt needs at least 2 frames (160 ms) of audio")
        padded = np.zeros(n * self.frame_size, dtype=np.float32)
        padded[: mono.shape[0]] = mono
        out = []
        with self._lock, self._ctx():
            self._reset_mimi(slot)
            self._mimi_exec([slot])
            x = torch.zeros(self.batch, 1, self.frame_size, device=self.device)
            for i in range(n):
                chunk = torch.from_numpy(padded[i * self.frame_size : (i + 1) * self.frame_size])
                x[slot, 0] = chunk.to(self.device)
                out.append(self.mimi.encode(x)[slot, :, 0].cpu())
            self._reset_mimi(slot)
        voice = torch.stack(out)
        return voice.long()


# ---------------------------------------------------------------- helpers


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EngineLoadError(
            f"device {name} requested but CUDA is not available (no NVIDIA driver, or a CPU "
            "build of torch): install the driver / CUDA torch, or set device=cpu"
        )
    return dev


def gpu_spec(device: torch.device) -> GpuSpec:
    props = torch.cuda.get_device_properties(device)
    return GpuSpec(props.name, int(props.total_memory), (props.major, props.minor))


def model_spec(files: ModelFiles) -> ModelSpec:
    """Count parameters of the dep_q=8 model on the meta device (no memory, ~seconds)."""
    from moshi.models import loaders
    from moshi.models.lm import LMModel
    from torch import nn

    kwargs = dict(files.lm_kwargs)
    kwargs["dep_q"] = C.AGENT_DEP_Q
    kwargs.pop("quantize", None)
    kwargs.pop("depformer_causal", None)
    lm = LMModel(device="meta", dtype=torch.bfloat16, **kwargs)
    linears = [m for m in lm.modules() if isinstance(m, nn.Linear)]
    lin = sum(m.weight.numel() for m in linears)
    total = sum(p.numel() for p in lm.parameters())
    dim = int(kwargs["dim"])
    context = int(kwargs.get("context") or 3000)
    dep_dim = int(kwargs.get("depformer_dim", 0))
    kv = int(kwargs["num_layers"]) * 2 * context * dim
    kv += int(kwargs.get("depformer_num_layers", 0)) * 2 * C.AGENT_DEP_Q * dep_dim
    mimi = loaders.get_mimi(None, files.mimi_config, device="meta")
    mimi_n = sum(p.numel() for p in mimi.parameters()) + sum(b.numel() for b in mimi.buffers())
    return ModelSpec(
        linear_params=lin,
        other_params=total - lin,
        kv_elements_per_session=kv,
        mimi_bytes=4 * mimi_n,
        context=context,
        linear_out_features=sum(m.weight.shape[0] for m in linears),
    )


def _cuda_graphs_env_ok() -> bool:
    return os.environ.get("NO_CUDA_GRAPH", "").lower() in {"", "0", "no", "n"}


def _require_bitsandbytes(method: str) -> None:
    try:
        import bitsandbytes  # noqa: F401
    except Exception as exc:
        raise EngineLoadError(
            f"quantize={method} needs bitsandbytes (pip install bitsandbytes): {exc}"
        ) from None


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("moshi", "torch", "bitsandbytes", "sentencepiece", "sphn"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "absent"
    return out
