#!/usr/bin/env python3
"""Poll the server's /readyz until it answers 200 (used as the unit's ExecStartPost).

Usage: wait_ready.py URL TIMEOUT_S. Exits 0 when ready, 1 when the server reports a
failed model load or the time runs out, so systemd marks the start as failed (and
Restart=on-failure tries again). TLS is not verified: this talks to 127.0.0.1.
"""

from __future__ import annotations

import json
import ssl
import sys
import time
import urllib.error
import urllib.request


def main(url: str, timeout_s: str) -> int:
    deadline = time.monotonic() + float(timeout_s)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    last = "no answer yet"
    while time.monotonic() < deadline:
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
    sys.exit(main(sys.argv[1], sys.argv[2]))
