#!/usr/bin/env python3
"""Poll the server's /readyz until it answers 200 (used as the unit's ExecStartPost).

Usage: wait_ready.py URL TIMEOUT_S [MAINPID]. Exits 0 when ready, 1 when the server
reports a failed model load, its process (MAINPID, from systemd) exits, or the time runs
out, so systemd marks the start as failed (and Restart=on-failure tries again). systemd
does not stop an ExecStartPost when the main process dies, hence the PID check.
TLS is not verified: this talks to 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request


def alive(pid: int | None) -> bool:
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(url: str, timeout_s: str, mainpid: str = "") -> int:
    pid = int(mainpid) if mainpid.isdigit() and int(mainpid) > 0 else None
    deadline = time.monotonic() + float(timeout_s)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    last = "no answer yet"
    while time.monotonic() < deadline:
        if not alive(pid):
            print(f"the server process {pid} exited before it was ready ({last})", file=sys.stderr)
            return 1
        try:
            with urllib.request.urlopen(url, timeout=5, context=ctx) as resp:
                if resp.status == 200:
                    return 0
        except urllib.error.HTTPError as exc:
            try:
                body = json.loads(exc.read() or b"{}")
            except ValueError:
                body = {}
            last = f"HTTP {exc.code} {body}"
            if body.get("status") == "failed":
                print(f"model load failed: {body.get('error')}", file=sys.stderr)
                return 1
        except (OSError, urllib.error.URLError) as exc:
            last = str(exc)
        time.sleep(1)
    print(f"not ready after {timeout_s} s: {last}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
