"""All server configuration in one place.

Every setting is read from the environment (prefix ``PERSONAPLEX_``) and is also a command
line flag of ``personaplex-server serve`` (``--kebab-case-name``); the flags come from the
model's fields (pydantic-settings' CLI source), so the two never drift apart.  Secrets are
the exception: the access token is read from the environment or from a file, never from
the command line, because process arguments are visible to every user of the machine.
"""

from __future__ import annotations

import argparse
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, CliSettingsSource, CliSuppress, SettingsConfigDict

ENV_PREFIX = "PERSONAPLEX_"


class Settings(BaseSettings):
    """Voice server settings (environment variables ``PERSONAPLEX_<NAME>``)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    # --- network ---------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address to listen on (0.0.0.0 for all).")
    port: int = Field(8998, ge=1, le=65535, description="TCP port (the official server's).")
    ssl_certfile: Path | None = Field(
        None, description="PEM certificate; with ssl_keyfile, serve https/wss."
    )
    ssl_keyfile: Path | None = Field(None, description="PEM private key for ssl_certfile.")

    # --- model -----------------------------------------------------------------------
    model_dir: Path = Field(
        Path("/var/lib/personaplex/model"),
        description="Folder laid out like the HF repo (model.safetensors, tokenizer files).",
    )
    voices_dir: Path | None = Field(
        None, description="Voice prompt folder (default: <model_dir>/voices)."
    )
    static_dir: Path | None = Field(
        None, description="Official web UI build (default: <model_dir>/dist); absent = help page."
    )
    device: str = Field("auto", description="Torch device: auto, cuda, cuda:N or cpu.")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="Activation/weight dtype; auto picks bf16 where native, else fp16."
    )
    quantize: Literal["auto", "none", "int8", "nf4"] = Field(
        "auto", description="Weight quantization; auto picks what fits the GPU with headroom."
    )
    sliced_weights: bool = Field(
        False, description="Write/load a dep_q=8 copy of the LM weights (saves about 1.4 GB)."
    )
    context_mode: Literal["pinned", "sliding", "stop"] = Field(
        "pinned",
        description="Past the model's 3000-frame context: pinned keeps the persona prompt in "
        "view with a sliding window of the rest (no length limit), sliding is upstream "
        "moshi's ring (the prompt leaves the window), stop ends the conversation.",
    )
    use_cuda_graphs: bool = Field(True, description="Capture CUDA graphs where they help.")
    cuda_graph_scope: Literal["pieces", "step"] = Field(
        "pieces",
        description="pieces: upstream moshi's graphs of the LM, depth transformer and Mimi "
        "parts; step: one graph around the whole batched step (fewer launches; not yet "
        "measured on a GPU, run tests/engine/test_cuda.py there first).",
    )
    use_compile: bool = Field(True, description="Use torch.compile where it helps.")
    warmup: bool = Field(True, description="Run a few model steps before reporting ready.")

    # --- audio codec -----------------------------------------------------------------
    opus_encoder: Literal["auto", "sphn", "libopus"] = Field(
        "auto",
        description="Reply encoder: libopus via PyAV with the settings below (about half the "
        "CPU of sphn), sphn (as the official server: complexity 10), auto = libopus if PyAV "
        "is installed.",
    )
    opus_complexity: int = Field(
        3, ge=0, le=10, description="libopus encoder complexity (libopus encoder)."
    )
    opus_bitrate: int = Field(
        24000, ge=6000, le=510000, description="libopus bitrate in bit/s (libopus encoder)."
    )
    opus_application: Literal["voip", "audio", "lowdelay"] = Field(
        "voip", description="libopus application mode (libopus encoder)."
    )

    # --- sessions --------------------------------------------------------------------
    max_sessions: int | Literal["auto"] = Field(
        1,
        description="Concurrent conversations, 1-64, or auto: as many as the GPU memory "
        "holds, fewer if the measured step of all of them is over 64 ms.",
    )
    max_queued_frames: int = Field(
        4,
        ge=1,
        le=100,
        description="Input frames (80 ms each) buffered per session before the oldest is dropped.",
    )
    gil_switch_interval_ms: float = Field(
        0.5,
        gt=0,
        le=100,
        description="Python thread switch interval; short keeps engine-thread hand-offs prompt.",
    )
    prompt_timeout_s: float = Field(
        300.0, gt=0, description="Give up on a session whose prompt phase takes longer."
    )
    idle_timeout_s: float = Field(
        30.0, gt=0, description="Close a session when the client sends nothing for this long."
    )

    # --- security & limits -------------------------------------------------------------
    access_token: CliSuppress[SecretStr | None] = Field(  # never a flag: argv is public
        None,
        description="Token required from clients (query 'token' or cookie). Env/file only.",
    )
    access_token_file: Path | None = Field(
        None, description="File holding the access token (alternative to the env variable)."
    )
    max_message_bytes: int = Field(
        65536, ge=1024, description="Largest WebSocket message accepted from a client."
    )
    max_text_prompt_chars: int = Field(
        1000, ge=1, description="Longest text prompt accepted (the official UI's limit)."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level."
    )

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if isinstance(self.max_sessions, int) and not 1 <= self.max_sessions <= 64:
            raise ValueError(f"max_sessions must be 1-64 or auto, got {self.max_sessions}")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile must be given together")
        if self.access_token is None and self.access_token_file is not None:
            try:
                text = self.access_token_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(
                    f"cannot read access_token_file {self.access_token_file}: {exc.strerror}"
                ) from None
            if not text:
                raise ValueError(f"access_token_file {self.access_token_file} is empty")
            self.access_token = SecretStr(text)
        if self.access_token is not None and not self.access_token.get_secret_value():
            self.access_token = None
        return self

    @property
    def effective_voices_dir(self) -> Path:
        return self.voices_dir if self.voices_dir is not None else self.model_dir / "voices"

    @property
    def effective_static_dir(self) -> Path:
        return self.static_dir if self.static_dir is not None else self.model_dir / "dist"

    @property
    def tls(self) -> bool:
        return self.ssl_certfile is not None


# ---------------------------------------------------------------------------------------
# Command line flags: pydantic-settings' CLI source on the ``serve`` parser
# ---------------------------------------------------------------------------------------


class _Refuse(argparse.Action):
    """A secret given as a flag (CliSuppress fields): an error that does not echo it."""

    def __call__(self, parser: argparse.ArgumentParser, *_: Any, **__: Any) -> None:
        flag = self.option_strings[0]
        parser.error(
            f"{flag} is not accepted on the command line (every local user can read process "
            f"arguments): set {ENV_PREFIX}{self.dest.upper()} or {flag}-file"
        )


def _add_argument(parser: Any, *names: str, **kwargs: Any) -> Any:
    annotation = Settings.model_fields[kwargs["dest"]].annotation
    if kwargs.get("help") == argparse.SUPPRESS:
        kwargs = {"dest": kwargs["dest"], "nargs": "?", "default": argparse.SUPPRESS}
        kwargs.update(help=argparse.SUPPRESS, action=_Refuse)
    elif typing.get_origin(annotation) is Literal:  # refused by argparse, listed in --help
        kwargs.update(choices=typing.get_args(annotation), metavar=None)
    return parser.add_argument(*names, **kwargs)


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per setting (``--kebab-case``, ``--[no-]flag`` for booleans), help with the
    environment variable and default; a secret given as a flag is an error."""
    source: CliSettingsSource[Settings] = CliSettingsSource(
        Settings,
        root_parser=parser,
        cli_kebab_case=True,
        cli_implicit_flags=True,
        cli_show_env_vars=True,
        cli_hide_none_type=True,
        add_argument_method=_add_argument,
    )
    parser.set_defaults(settings_source=source)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Build Settings: flags given on the command line win over the environment."""
    source: CliSettingsSource[Settings] = args.settings_source
    given = {k: v for k, v in vars(args).items() if k in Settings.model_fields}
    return Settings(_cli_settings_source=source(parsed_args=given))
