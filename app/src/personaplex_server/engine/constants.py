"""PersonaPlex facts the runtime depends on (see shared/docs/personaplex.md)."""

from __future__ import annotations

# File names of the Hugging Face repository nvidia/personaplex-7b-v1.
LM_FILE = "model.safetensors"
MIMI_FILE = "tokenizer-e351c8d8-checkpoint125.safetensors"
TOKENIZER_FILE = "tokenizer_spm_32k_3.model"
CONFIG_FILE = "config.json"
VOICES_DIR = "voices"
# Our dep_q=8 copy of the LM weights, written next to the original when asked for.
SLICED_LM_FILE = "model.dep_q8.safetensors"

SAMPLE_RATE = 24000
FRAME_SIZE = 1920  # 80 ms at 24 kHz, 12.5 frames per second
FRAME_RATE = 12.5

# The agent half of the depth transformer: the runtime predicts only the agent's codebooks.
AGENT_DEP_Q = 8
AUDIO_CODEBOOKS = 8

# Mimi codes the official model was trained with during the prompt phase (fork's lm.py).
SILENCE_TOKENS = (948, 243, 1178, 546, 1736, 1030, 1978, 2008)
SINE_TOKENS = (430, 1268, 381, 1611, 1095, 1495, 56, 472)
TEXT_PAD_ID = 3  # text token forced while audio prompts play
TEXT_EPAD_ID = 0  # end-of-padding marker: not text either
SILENCE_FRAMES = 6  # 0.5 s, after the voice prompt and after the text prompt
SYSTEM_TAG = "<system>"
VOICE_PROMPT_LUFS = -24.0
AUDIO_VOICE_SUFFIXES = (".wav", ".mp3", ".flac", ".ogg")
EMBEDDING_VOICE_SUFFIX = ".pt"
