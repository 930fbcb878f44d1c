"""roles/idle_stop/files/idle_stop.py against a loopback stand-in of the voice server.

The stand-in answers /readyz and /metrics in the app's own shapes (routes/http.py: 503
{"status": "loading"} until ready; metrics.py: personaplex_sessions_active gauge,
personaplex_sessions counter). `who` and the power-off command are replaced by recorders; the
clock is passed in, so no test sleeps. Molecule's full_stack runs the same script for real.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from project import REPO

SCRIPT = REPO / "roles" / "idle_stop" / "files" / "idle_stop.py"


def load():
    spec = importlib.util.spec_from_file_location("idle_stop", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules["idle_stop"] = module  # dataclasses resolve annotations through it
    spec.loader.exec_module(module)
    return module


class Server:
    def __init__(self) -> None:
        self.ready = "loading"
        self.active = 0
        self.total = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/readyz":
                    body = json.dumps({"status": outer.ready}).encode()
                    code = 200 if outer.ready == "ready" else 503
                else:
                    body = (f"# TYPE personaplex_sessions_active gauge\npersonaplex_sessions_active {float(outer.active)}\n"
                            f"# TYPE personaplex_sessions counter\npersonaplex_sessions_total {float(outer.total)}\n"
                            "personaplex_sessions_created 1.7e+09\n").encode()
                    code = 200
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_a: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture
def env(monkeypatch):
    mod = load()
    server = Server()
    state = {"who": [], "poweroffs": [], "walls": [], "unit": "active", "container": False}

    def fake_logins(now):
        return [(f"{u} on {t}", min(last, now)) for u, t, last in state["who"]]

    def fake_run(cmd, **kwargs):
        class R:
            returncode = 0
            stdout = ""
            stderr = ""
        if cmd[0] == "wall":
            state["walls"].append(kwargs.get("input"))
        else:
            state["poweroffs"].append(cmd)
        return R()

    monkeypatch.setattr(mod, "logins", fake_logins)
    monkeypatch.setattr(mod, "unit_state", lambda _u: state["unit"])
    monkeypatch.setattr(mod, "in_container", lambda: state["container"])
    monkeypatch.setattr(mod.subprocess, "run", fake_run)
    monkeypatch.setattr(mod.shutil, "which", lambda name: f"/usr/bin/{name}")
    cfg = mod.Config(idle_minutes=30, warn_minutes=5, check_interval_s=30, server_url=server.url,
                     server_unit="personaplex-server", command=["systemctl", "poweroff"])
    yield mod, server, state, cfg
    server.httpd.shutdown()


def run_until(stopper, t0, t1, step=30):
    t = t0
    while t <= t1:
        stopper.check(t)
        t += step


def test_never_stops_while_the_model_loads(env):
    mod, server, state, cfg = env
    s = mod.IdleStop(cfg)
    s.last_busy = 0
    run_until(s, 0, 3 * 3600, step=600)
    assert state["poweroffs"] == []
    server.ready = "ready"
    run_until(s, 3 * 3600 + 60, 3 * 3600 + 29 * 60, step=300)
    assert state["poweroffs"] == []
    run_until(s, 3 * 3600 + 30 * 60, 3 * 3600 + 31 * 60)
    assert state["poweroffs"] == [["systemctl", "poweroff"]]


def test_unit_activating_counts_as_loading(env):
    mod, server, state, cfg = env
    server.httpd.shutdown()
    server.httpd.server_close()  # nothing listens: the unit state decides
    state["unit"] = "activating"
    s = mod.IdleStop(cfg)
    s.last_busy = 0
    run_until(s, 0, 2 * 3600, step=600)
    assert state["poweroffs"] == []
    state["unit"] = "failed"  # a dead server keeps nobody talking: counted as idle
    run_until(s, 2 * 3600 + 60, 2 * 3600 + 31 * 60, step=300)
    assert len(state["poweroffs"]) == 1


def test_no_stop_during_a_conversation_and_a_short_one_between_checks_counts(env):
    mod, server, state, cfg = env
    server.ready = "ready"
    s = mod.IdleStop(cfg)
    s.last_busy = 0
    server.active = 1
    run_until(s, 0, 2 * 3600, step=600)
    assert state["poweroffs"] == []
    server.active = 0
    # 25 minutes idle, then a conversation that starts and ends between two checks
    run_until(s, 2 * 3600 + 300, 2 * 3600 + 25 * 60, step=300)
    server.total += 1
    s.check(2 * 3600 + 25 * 60 + 30)
    run_until(s, 2 * 3600 + 30 * 60, 2 * 3600 + 55 * 60, step=300)
    assert state["poweroffs"] == []  # the countdown restarted at the short conversation
    run_until(s, 2 * 3600 + 56 * 60, 2 * 3600 + 56 * 60)
    assert len(state["poweroffs"]) == 1


def test_login_blocks_and_a_forgotten_terminal_is_warned_then_stopped(env, capsys):
    mod, server, state, cfg = env
    server.ready = "ready"
    s = mod.IdleStop(cfg)
    s.last_busy = 0
    for t in range(0, 3 * 3600, 600):  # alice types for three hours: never stopped
        state["who"] = [("alice", "pts/0", t)]
        s.check(t)
    assert state["poweroffs"] == [] and "in use: logged in: alice on pts/0" in capsys.readouterr().out
    last_key = 3 * 3600 - 600
    # then her terminal is forgotten: the countdown runs from her last keystroke,
    # she is warned 5 min before, and the machine stops 30 min after it.
    run_until(s, 3 * 3600, last_key + 24 * 60, step=120)
    assert state["walls"] == [] and state["poweroffs"] == []
    run_until(s, last_key + 25 * 60, last_key + 29 * 60, step=120)
    assert len(state["walls"]) == 1 and "powers off in 5 min" in state["walls"][0]
    assert state["poweroffs"] == []
    s.check(last_key + 30 * 60)
    assert len(state["poweroffs"]) == 1


def test_dry_run_and_container_only_log(env, capsys):
    mod, server, state, cfg = env
    server.ready = "ready"
    cfg.dry_run = True
    s = mod.IdleStop(cfg)
    s.last_busy = 0
    run_until(s, 0, 31 * 60, step=300)
    assert state["poweroffs"] == [] and "would power off now (dry run" in capsys.readouterr().out
    cfg.dry_run = False
    state["container"] = True
    s = mod.IdleStop(cfg)
    s.last_busy = 0
    run_until(s, 0, 31 * 60, step=300)
    assert state["poweroffs"] == [] and "would power off now (in a container" in capsys.readouterr().out
    cfg.command = ["logger", "stand-in"]  # an explicit stand-in command runs even in a container
    s = mod.IdleStop(cfg)
    s.last_busy = 0
    run_until(s, 0, 31 * 60, step=300)
    assert state["poweroffs"] == [["logger", "stand-in"]]


def test_metric_parser_reads_the_exposition_format():
    mod = load()
    text = "# HELP x\npersonaplex_sessions_active 2.0\npersonaplex_sessions_total 7.0\n"
    assert mod.metric(text, "personaplex_sessions_active") == 2.0
    assert mod.metric(text, "personaplex_sessions_total") == 7.0
    assert mod.metric(text, "personaplex_ready") is None


def test_zero_minutes_is_off(tmp_path, capsys):
    mod = load()
    conf = tmp_path / "c.json"
    conf.write_text(json.dumps({"idle_minutes": 0, "server_url": "https://127.0.0.1:8998"}))
    assert mod.main(["idle_stop.py", str(conf)]) == 0
    assert "idle stop is off" in capsys.readouterr().out
    assert mod.main(["idle_stop.py", str(tmp_path / "missing.json")]) == 2
