"""Settings: environment prefix, generated CLI flags, secrets kept off the command line."""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from personaplex_server import cli
from personaplex_server.auth import RedactTokenFilter, bearer_token, redact, token_ok
from personaplex_server.config import Settings, add_settings_arguments, settings_from_args
from personaplex_server.engine_api import engine_config_kwargs
from personaplex_server.uvicorn_server import uvicorn_kwargs


def parse(argv: list[str]) -> Settings:
    args = cli.build_parser().parse_args(["serve", *argv])
    return settings_from_args(args)


def test_every_setting_but_the_secret_is_a_flag():
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser)
    flags = {a.dest for a in parser._actions if a.help != argparse.SUPPRESS} - {"help"}
    assert flags == set(Settings.model_fields) - {"access_token"}
    help_text = parser.format_help()
    assert "--no-use-compile" in help_text
    assert "PERSONAPLEX_MAX_SESSIONS" in help_text and "--access-token " not in help_text


def test_every_flag_in_the_readme_still_works():
    """The README's table of settings names each flag; users' scripts rely on them."""
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `PERSONAPLEX_(\w+)` \| ([^|]+) \|", readme, re.MULTILINE)
    assert {name.lower() for name, _ in rows} == set(Settings.model_fields)
    parser = cli.build_parser()
    for name, cell in rows:
        field, flag = name.lower(), cell.strip().strip("`")
        if flag == "(env only)":
            assert field == "access_token"
        elif flag.startswith("--[no-]"):
            yes, no = flag.replace("[no-]", ""), flag.replace("[no-]", "no-")
            for given, value in (yes, True), (no, False):
                assert vars(parser.parse_args(["serve", given]))[field] is value, given
        else:
            default = Settings.model_fields[field].default
            value = str(default) if default is not None else "/some/path"
            assert vars(parser.parse_args(["serve", flag, value]))[field] == value, flag


@pytest.mark.parametrize("argv", [["--access-token", "s3cret"], ["--access-token=s3cret"]])
def test_the_access_token_is_never_a_flag(argv, monkeypatch, capsys):
    monkeypatch.setenv("PERSONAPLEX_ACCESS_TOKEN", "from-env")
    with pytest.raises(SystemExit) as exc:
        parse(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--access-token is not accepted on the command line" in err
    assert "PERSONAPLEX_ACCESS_TOKEN" in err and "s3cret" not in err
    # Without the flag the token comes from the environment (the flag's slot adds nothing).
    assert parse([]).access_token.get_secret_value() == "from-env"  # type: ignore[union-attr]


def test_defaults_match_the_official_server():
    s = Settings()
    assert s.port == 8998 and s.max_sessions == 1 and s.max_text_prompt_chars == 1000
    assert s.effective_voices_dir == s.model_dir / "voices"
    assert s.effective_static_dir == s.model_dir / "dist"


def test_env_then_flags(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PERSONAPLEX_PORT", "9000")
    monkeypatch.setenv("PERSONAPLEX_MAX_SESSIONS", "3")
    monkeypatch.setenv("PERSONAPLEX_USE_COMPILE", "false")
    s = parse(["--max-sessions", "2", "--quantize", "nf4", "--no-use-cuda-graphs"])
    assert s.port == 9000  # env
    assert s.max_sessions == 2  # flag wins over env
    assert s.quantize == "nf4" and s.use_cuda_graphs is False and s.use_compile is False


def test_invalid_values_are_refused():
    with pytest.raises(SystemExit):
        parse(["--quantize", "int4"])  # not a choice
    with pytest.raises(ValidationError):
        Settings(max_sessions=0)
    with pytest.raises(ValidationError, match="together"):
        Settings(ssl_certfile=Path("/tmp/cert.pem"))


def test_access_token_from_env_or_file_never_shown(monkeypatch: pytest.MonkeyPatch, tmp_path):
    monkeypatch.setenv("PERSONAPLEX_ACCESS_TOKEN", "from-env")
    s = Settings()
    assert s.access_token is not None and s.access_token.get_secret_value() == "from-env"
    assert "from-env" not in repr(s) and "from-env" not in str(s.model_dump())
    monkeypatch.delenv("PERSONAPLEX_ACCESS_TOKEN")
    f = tmp_path / "token"
    f.write_text("from-file\n")
    s = parse(["--access-token-file", str(f)])
    assert s.access_token is not None and s.access_token.get_secret_value() == "from-file"
    with pytest.raises(ValidationError, match="cannot read"):
        Settings(access_token_file=tmp_path / "missing")
    with pytest.raises(SystemExit):
        parse(["--access-token", "x"])  # refused: secrets stay off argv


def test_token_compare_and_redaction():
    s = Settings(access_token="abc")  # type: ignore[arg-type]
    assert token_ok(s.access_token, {"token": "abc"}, {})
    assert token_ok(s.access_token, {}, {"personaplex_token": "abc"})
    assert not token_ok(s.access_token, {"token": "abd"}, {})
    assert not token_ok(s.access_token, {}, {})
    assert token_ok(None, {}, {})
    assert redact('"WebSocket /api/chat?voice_prompt=a&token=abc&text_prompt=Hi+me&x=1"') == (
        '"WebSocket /api/chat?voice_prompt=a&token=***&text_prompt=***&x=1"'
    )
    record = logging.LogRecord("uvicorn.access", 20, "", 0, "%s %s", ("GET", "/?token=abc"), None)
    RedactTokenFilter().filter(record)
    assert record.getMessage() == "GET /?token=***"


def test_bearer_token_compare():
    s = Settings(access_token="abc")  # type: ignore[arg-type]
    assert token_ok(s.access_token, {}, {}, {"authorization": "Bearer abc"})
    assert token_ok(s.access_token, {}, {}, {"authorization": "bearer  abc "})
    for value in ("Bearer abd", "Bearer ab", "Bearer", "Basic abc", "abc", ""):
        assert not token_ok(s.access_token, {}, {}, {"authorization": value}), value
    assert not token_ok(s.access_token, {}, {}, {})
    assert bearer_token("Bearer a.b-c_d~e+f/g=") == "a.b-c_d~e+f/g="


def test_redaction_keeps_format_and_arguments_matched():
    """The filter redacts the rendered message: a format string that itself contains
    ``text_prompt=%s`` (or a bearer header) still renders, with the values hidden."""
    record = logging.LogRecord(
        "x", 20, "", 0, "start text_prompt=%s token=%s n=%d", ("my+persona", "abc", 3), None
    )
    RedactTokenFilter().filter(record)
    assert record.getMessage() == "start text_prompt=*** token=*** n=3"
    record = logging.LogRecord("x", 20, "", 0, "headers %r", ({"h": "Bearer abc.def"},), None)
    RedactTokenFilter().filter(record)
    assert "abc.def" not in record.getMessage() and "Bearer ***" in record.getMessage()
    # A malformed call is left to the handler (which reports it), not hidden or raised here.
    record = logging.LogRecord("x", 20, "", 0, "%d", ("not a number",), None)
    assert RedactTokenFilter().filter(record)
    with pytest.raises(TypeError):
        record.getMessage()


def test_engine_config_built_from_settings_by_field_name():
    from dataclasses import dataclass

    @dataclass
    class FakeEngineConfig:
        model_dir: Path
        voices_dir: Path | None = None
        dtype: str = "auto"
        max_sessions: int = 1
        use_compile: bool = True

    s = Settings(model_dir=Path("/m"), dtype="float16", max_sessions=2, use_compile=False)
    kwargs = engine_config_kwargs(s, FakeEngineConfig)
    assert kwargs == {
        "model_dir": Path("/m"),
        "voices_dir": Path("/m/voices"),
        "dtype": "float16",
        "max_sessions": 2,
        "use_compile": False,
    }


def test_real_engine_config_accepts_every_shared_setting():
    from personaplex_server.engine import EngineConfig

    cfg = EngineConfig(**engine_config_kwargs(Settings(quantize="int8"), EngineConfig))
    assert cfg.quantize == "int8" and cfg.model_dir == Settings().model_dir


def test_uvicorn_gets_tls_and_limits():
    s = Settings(ssl_certfile=Path("c.pem"), ssl_keyfile=Path("k.pem"), max_message_bytes=4096)
    kw = uvicorn_kwargs(s)
    assert kw["ssl_certfile"] == "c.pem" and kw["ssl_keyfile"] == "k.pem"
    assert kw["ws_per_message_deflate"] is False
    assert kw["ws_max_size"] >= 4096


def test_cli_has_the_commands():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert {"serve", "client", "bench", "make-tiny-model"} <= set(sub.choices)


def test_importing_the_server_does_no_work():
    import subprocess
    import sys

    code = (
        "import sys, personaplex_server.app, personaplex_server.cli, personaplex_server.client,"
        " personaplex_server.engine;"
        "heavy = [m for m in ('torch', 'moshi', 'av') if m in sys.modules];"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_max_sessions_auto_from_env_and_flag(monkeypatch) -> None:
    monkeypatch.setenv("PERSONAPLEX_MAX_SESSIONS", "8")
    assert Settings().max_sessions == 8
    monkeypatch.setenv("PERSONAPLEX_MAX_SESSIONS", "auto")
    assert Settings().max_sessions == "auto"
    assert parse(["--max-sessions", "auto"]).max_sessions == "auto"
    monkeypatch.setenv("PERSONAPLEX_MAX_SESSIONS", "auto")
    assert parse(["--max-sessions", "3"]).max_sessions == 3
    with pytest.raises(ValueError, match="1-64 or auto"):
        Settings(max_sessions=65)
