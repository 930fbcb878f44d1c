"""Idle stop (roles/idle_stop) as configured by configure.yml, with a short idle time.

group_vars/voice_servers.yml sets 15 s of idle time, checks every second, and a stand-in
for the power-off command (`logger -t idle-stop-stand-in`): each "power-off" is a journal
line. The service itself is the real one (system python3, the real server's /readyz and
/metrics, the real utmp through `who`).
"""

from __future__ import annotations

import time

SERVICE = "personaplex-idle-stop"
IDLE_S = 15
CONF = "/etc/personaplex"
CLIENT = (
    "/opt/personaplex/venv/bin/personaplex-server client --url https://127.0.0.1:8998 "
    f"--ca-file {CONF}/tls/server.crt --token-file {CONF}/access-token --json"
)
TTY = "idle-test-tty"  # a stand-in terminal under /dev: its atime is the user's last keystroke

# glibc's struct utmp on x86_64 (<bits/utmp.h>): type, pid, line[32], id[4], user[32],
# host[256], exit{short,short}, session, tv{sec,usec}, addr_v6[4], unused[20] = 384 bytes.
# pid 1: `who` hides entries whose process is gone (coreutils READ_UTMP_CHECK_PIDS).
UTMP = r"""
import struct, sys, time
fmt = "hi32s4s32s256shhiii4i20s"
kind = int(sys.argv[1])  # 7 USER_PROCESS (logged in), 8 DEAD_PROCESS (logged out)
rec = struct.pack(fmt, kind, 1, b"idle-test-tty", b"it", b"tester", b"198.51.100.9",
                  0, 0, 0, int(time.time()), 0, 0, 0, 0, 0, b"")
open("/var/run/utmp", "ab").close()
with open("/var/run/utmp", "r+b") as f:
    data = f.read()
    size = struct.calcsize(fmt)
    for off in range(0, len(data), size):
        if data[off + 40:off + 44] == b"it\0\0":
            f.seek(off)
            break
    else:
        f.seek(0, 2)
    f.write(rec)
"""


def now(host) -> int:
    return int(host.check_output("date +%s"))


def stand_in_calls(host, since: int) -> list[int]:
    """Times of the stand-in power-offs since `since` (epoch seconds)."""
    out = host.check_output(f"journalctl -t idle-stop-stand-in --since @{since} -o short-unix --no-pager -q")
    return [int(float(line.split()[0])) for line in out.splitlines() if "power off requested" in line]


def service_log(host, since: int) -> str:
    return host.check_output(f"journalctl -u {SERVICE} --since @{since} -o cat --no-pager -q")


def restart(host) -> int:
    with host.sudo():
        host.check_output(f"systemctl restart {SERVICE}")
    return now(host)


def login(host, kind: int) -> None:
    with host.sudo():
        host.check_output(f"python3 -c '{UTMP}' {kind}")


def test_idle_stop_service_runs_as_configured(host):
    assert host.service(SERVICE).is_running and host.service(SERVICE).is_enabled
    conf = host.file(f"{CONF}/idle-stop.json").content_string
    assert '"idle_minutes": 0.25' in conf and '"server_url": "https://127.0.0.1:8998"' in conf


def test_no_stop_during_a_conversation_then_stop_after_it(host):
    with host.sudo():
        host.run("systemctl reset-failed idle-test-client")
        host.check_output(f"systemd-run --unit idle-test-client --collect {CLIENT} --input-seconds 24")
    start = restart(host)  # the countdown starts now, with the conversation on its way
    while host.run("systemctl is-active idle-test-client").stdout.strip() in ("active", "activating"):
        assert stand_in_calls(host, start) == [], service_log(host, start)
        assert now(host) - start < 120, "the conversation did not end"
        time.sleep(1)
    ended = now(host)
    assert ended - start > IDLE_S + 5, "the conversation must outlast the idle time for this test to mean anything"
    assert stand_in_calls(host, start) == [], service_log(host, start)
    log = service_log(host, start)
    assert "conversation(s) running" in log, log
    while not stand_in_calls(host, start) and now(host) - ended < IDLE_S + 20:
        time.sleep(1)
    calls = stand_in_calls(host, start)
    assert calls, "no power-off after the conversation ended:\n" + service_log(host, start)
    assert calls[0] - ended >= IDLE_S - 2, (calls, ended)
    assert "powering off: idle for" in service_log(host, start)


def test_no_stop_while_someone_is_logged_in_and_typing(host):
    with host.sudo():
        host.check_output(f"touch /dev/{TTY}")
    login(host, 7)
    try:
        assert "tester" in host.check_output("who")  # the record is a real utmp entry
        start = restart(host)
        deadline = start + IDLE_S + 8
        while now(host) < deadline:
            with host.sudo():
                host.check_output(f"touch -a /dev/{TTY}")  # keystrokes
            assert stand_in_calls(host, start) == [], service_log(host, start)
            time.sleep(2)
        assert f"logged in: tester on {TTY}" in service_log(host, start)
    finally:
        login(host, 8)
    assert "tester" not in host.check_output("who")
    logged_out = now(host)
    while not stand_in_calls(host, logged_out) and now(host) - logged_out < IDLE_S + 20:
        time.sleep(1)
    assert stand_in_calls(host, logged_out), service_log(host, logged_out)


def test_a_forgotten_terminal_is_warned_and_does_not_keep_the_machine_on(host):
    with host.sudo():
        host.check_output(f"touch /dev/{TTY} && touch -a -d '-2 hours' /dev/{TTY}")
    login(host, 7)
    try:
        start = restart(host)
        while not stand_in_calls(host, start) and now(host) - start < IDLE_S + 20:
            time.sleep(1)
        log = service_log(host, start)
        assert stand_in_calls(host, start), log
        assert "warning logged-in users" in log and "powers off in" in log, log
    finally:
        login(host, 8)
        with host.sudo():
            host.run(f"rm -f /dev/{TTY}")
