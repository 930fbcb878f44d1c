#!/usr/bin/python3
"""Power the machine off from inside the guest when nobody has used it for a while.

Runs as a long-lived systemd service with the system python3 (standard library only).
Every check it asks the voice server itself (its /readyz and /metrics on loopback) and
the login records (`who`, i.e. utmp) whether the machine is in use:

- a conversation is running (personaplex_sessions_active > 0), or one started since the
  last check (the personaplex_sessions counter moved);
- the model is still loading (/readyz says "loading", or the unit is "activating");
- someone logged in interactively (a utmp entry, as `who` lists: console, SSH with a
  terminal) typed something: the countdown runs from their last keystroke (the
  terminal's access time), so a forgotten terminal does not keep a GPU running for days.

After idle_minutes without any of these it logs why and runs the power-off command
(default `systemctl poweroff`: a guest shutdown stops a Compute Engine VM, so vCPU and
GPU billing end; disk and IP stay). warn_minutes before that it writes to every
terminal with `wall`. In dry-run mode, or inside a container with the default command
(the local target), it only logs what it would do.

Usage: idle_stop.py CONFIG_JSON
"""

from __future__ import annotations

import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

DEFAULT_COMMAND = ["systemctl", "poweroff"]


def log(message: str) -> None:
    # stdout goes to the journal (journalctl -u personaplex-idle-stop).
    print(message, flush=True)


@dataclass
class Config:
    idle_minutes: float
    warn_minutes: float
    check_interval_s: float
    server_url: str
    server_unit: str
    command: list[str] = field(default_factory=lambda: list(DEFAULT_COMMAND))
    dry_run: bool = False

    @classmethod
    def load(cls, path: str) -> Config:
        with open(path, encoding="utf-8") as handle:
            raw: dict[str, Any] = json.load(handle)
        return cls(
            idle_minutes=float(raw["idle_minutes"]),
            warn_minutes=float(raw.get("warn_minutes", 5)),
            check_interval_s=float(raw.get("check_interval_s", 30)),
            server_url=str(raw["server_url"]).rstrip("/"),
            server_unit=str(raw.get("server_unit", "personaplex-server")),
            command=[str(c) for c in raw.get("command") or DEFAULT_COMMAND],
            dry_run=bool(raw.get("dry_run", False)),
        )


def _fetch(url: str) -> tuple[int, str]:
    # Loopback to our own server: its certificate is self-signed, nothing to verify.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=5, context=ctx) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def metric(text: str, name: str) -> float | None:
    """Value of an unlabelled Prometheus sample (text exposition format)."""
    match = re.search(rf"^{re.escape(name)}(?:{{}})? ([0-9.eE+-]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


def unit_state(unit: str) -> str:
    proc = subprocess.run(["systemctl", "is-active", unit], capture_output=True, text=True, check=False)
    return proc.stdout.strip() or "unknown"


def logins(now: float) -> list[tuple[str, float]]:
    """Interactive logins from utmp (`who`), each with the time of its last keystroke (the
    terminal's access time; `now` when the terminal cannot be read: the safe side)."""
    proc = subprocess.run(["who"], capture_output=True, text=True, check=False)
    found: list[tuple[str, float]] = []
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        user, tty = parts[0], parts[1]
        try:
            last = os.stat(f"/dev/{tty}").st_atime
        except OSError:
            last = now
        found.append((f"{user} on {tty}", min(last, now)))
    return found


def in_container() -> bool:
    if not shutil.which("systemd-detect-virt"):
        return False
    return subprocess.run(["systemd-detect-virt", "--container", "--quiet"], check=False).returncode == 0


class IdleStop:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.last_busy = time.time()  # a fresh boot gets the whole idle time to connect
        self.last_sessions_total: float | None = None
        self.warned = False
        self.last_reason = ""

    def busy_reasons(self, now: float) -> list[str]:
        reasons: list[str] = []
        try:
            status, body = _fetch(f"{self.cfg.server_url}/readyz")
            if status != 200 and '"loading"' in body:
                reasons.append("the model is still loading")
            _, text = _fetch(f"{self.cfg.server_url}/metrics")
            active = metric(text, "personaplex_sessions_active") or 0.0
            total = metric(text, "personaplex_sessions_total")
            if active > 0:
                reasons.append(f"{active:g} conversation(s) running")
            if total is not None and self.last_sessions_total is not None and total > self.last_sessions_total:
                reasons.append("a conversation took place since the last check")
            self.last_sessions_total = total
        except (OSError, ValueError) as exc:
            state = unit_state(self.cfg.server_unit)
            if state in ("activating", "reloading"):
                reasons.append(f"{self.cfg.server_unit} is starting (model loading)")
            elif self.last_reason != f"unreachable:{state}":
                log(f"voice server not reachable ({exc}); {self.cfg.server_unit} is {state}: counted as idle")
                self.last_reason = f"unreachable:{state}"
        return reasons

    def login_activity(self, now: float) -> tuple[float | None, list[str]]:
        """Latest keystroke of any interactive login, and the logins typed in within the idle time.
        The countdown runs from the latest keystroke: a forgotten terminal does not keep the GPU on."""
        found = logins(now)
        if not found:
            return None, []
        recent = [who for who, last in found if now - last < self.cfg.idle_minutes * 60]
        return max(last for _, last in found), recent

    def power_off(self, idle_for: float) -> None:
        why = (f"idle for {idle_for / 60:.1f} min (limit {self.cfg.idle_minutes:g} min): no conversation, "
               "model loaded or not running, no interactive login")
        default = self.cfg.command == DEFAULT_COMMAND
        if self.cfg.dry_run or (default and in_container()):
            mode = "dry run" if self.cfg.dry_run else "in a container"
            log(f"would power off now ({mode}, nothing done): {why}; command: {' '.join(self.cfg.command)}")
            return
        log(f"powering off: {why}; command: {' '.join(self.cfg.command)}")
        proc = subprocess.run(self.cfg.command, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            log(f"power-off command failed (rc {proc.returncode}): {proc.stderr.strip()}")

    def warn(self, left_s: float) -> None:
        message = (f"PersonaPlex idle stop: no conversation for a while; this machine powers off in "
                   f"{max(left_s, 0) / 60:.0f} min to stop GPU charges. Type anything in your terminal "
                   "or start a conversation to keep it on (make start wakes it up again).")
        log(f"warning logged-in users: {message}")
        if shutil.which("wall"):
            subprocess.run(["wall"], input=message, text=True, capture_output=True, check=False)

    def check(self, now: float) -> None:
        reasons = self.busy_reasons(now)
        last_key, recent = self.login_activity(now)
        if last_key is not None and last_key > self.last_busy:
            self.last_busy = last_key
            self.warned = False
        if recent and not reasons:
            reason = "logged in: " + ", ".join(recent)
            if reason != self.last_reason:
                log(f"in use: {reason}")
                self.last_reason = reason
        if reasons:
            reason = "; ".join(reasons)
            if reason != self.last_reason:
                log(f"in use: {reason}")
                self.last_reason = reason
            self.last_busy = now
            self.warned = False
            return
        if recent:
            pass  # someone typed within the idle time: the countdown from that keystroke runs on
        elif self.last_reason and not self.last_reason.startswith("unreachable:") and self.last_reason != "idle":
            log("idle: no conversation, no loading, no interactive login; the countdown starts")
            self.last_reason = "idle"
        idle_for = now - self.last_busy
        limit = self.cfg.idle_minutes * 60
        warn_at = limit - self.cfg.warn_minutes * 60
        if not self.warned and self.cfg.warn_minutes > 0 and idle_for >= warn_at:
            self.warn(limit - idle_for)
            self.warned = True
        if idle_for >= limit:
            self.power_off(idle_for)
            # Still here (dry run, stand-in command): start a new countdown, do not spin.
            self.last_busy = now
            self.warned = False

    def run(self) -> None:
        log(f"idle stop: power off after {self.cfg.idle_minutes:g} min without conversation or login "
            f"(checks every {self.cfg.check_interval_s:g} s, warning {self.cfg.warn_minutes:g} min before)")
        while True:
            self.check(time.time())
            time.sleep(self.cfg.check_interval_s)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: idle_stop.py CONFIG_JSON", file=sys.stderr)
        return 2
    try:
        cfg = Config.load(argv[1])
    except (OSError, ValueError, KeyError) as exc:
        print(f"cannot read the idle-stop configuration {argv[1]}: {exc}", file=sys.stderr)
        return 2
    if cfg.idle_minutes <= 0:
        log("idle stop is off (idle_minutes 0)")
        return 0
    IdleStop(cfg).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
