#!/usr/bin/env python3
"""`make init`: ask once for the settings every command needs, write them to a git-ignored file.

The file (default inventory/group_vars/all/settings.local.yml) sits next to gcp.yml and
deploy.yml, so every playbook and make target reads it; it sorts after them, so its values
win over their defaults. Each value is written as "the environment variable if set, else
the value given here", so GCP_PROJECT=other make plan still works for one run.

No secret is written in clear: the Hugging Face token stays in $HF_TOKEN, in a file of
yours (read at run time), or in an ansible-vault file this script only tells you how to make.

Stdlib only (runs before `make setup`). Every prompt has a flag, for scripts and tests:
  scripts/init_settings.py --project my-proj --admin-cidrs 203.0.113.7/32 --yes
The caller's IPv4 address is looked up with `curl -4 -s https://ifconfig.me` unless
--my-ip ADDRESS is given or --no-ip-lookup is set (machines without Internet, tests).
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "inventory" / "group_vars" / "all" / "settings.local.yml"
# Google's rule for project IDs: 6-30 chars, lowercase letter first, no trailing hyphen.
PROJECT_RE = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
ZONE_RE = re.compile(r"^[a-z]+-[a-z]+[0-9]+-[a-z]$")
HF_CLI_TOKEN = Path("~/.cache/huggingface/token")  # where `huggingface-cli login` keeps it
TOKEN_SOURCES = ("env", "file", "vault")


class InitError(Exception):
    """Bad input: the message says what to type instead."""


def check_project(value: str) -> str:
    value = value.strip()
    if not PROJECT_RE.match(value):
        raise InitError(f"{value!r} is not a project ID: 6-30 characters, lowercase letters, digits and '-', "
                        "starting with a letter (the ID, not the display name: gcloud projects list).")
    return value


def check_zone(value: str) -> str:
    value = value.strip()
    if not ZONE_RE.match(value):
        raise InitError(f"{value!r} is not a zone name like us-central1-a.")
    return value


def check_cidrs(value: str, allow_empty: bool = False) -> list[str]:
    """Comma-separated IPv4 CIDRs; a bare address becomes /32. IPv6 is refused (the firewall rules are IPv4)."""
    out: list[str] = []
    for item in (p.strip() for p in value.split(",")):
        if not item:
            continue
        try:
            version = ipaddress.ip_network(item, strict=False).version
        except ValueError:
            version = 4  # not an address at all: the strict parse below says why
        if version != 4:
            raise InitError(f"{item!r} is IPv6: the firewall rules take IPv4 only. Find your IPv4 address with curl -4 -s https://ifconfig.me")
        try:
            net = ipaddress.ip_network(item if "/" in item else f"{item}/32", strict=True)
        except ValueError as exc:
            raise InitError(f"{item!r} is not an IPv4 CIDR ({exc}); e.g. 203.0.113.7/32 or 198.51.100.0/24.") from exc
        if net.prefixlen == 0:
            raise InitError("0.0.0.0/0 opens the VM to everyone: set gcp_allow_world_access: true by hand if you really mean it.")
        out.append(str(net))
    if not out and not allow_empty:
        raise InitError("at least one CIDR is needed, e.g. 203.0.113.7/32")
    return out


def check_token_source(value: str) -> str:
    if value not in TOKEN_SOURCES:
        raise InitError(f"{value!r}: choose one of {', '.join(TOKEN_SOURCES)}")
    return value


def lookup_ipv4(timeout: int = 8) -> str:
    """The caller's public IPv4 address as the Internet sees it, or '' when unknown."""
    if not shutil.which("curl"):
        return ""
    try:
        proc = subprocess.run(["curl", "-4", "-s", "--max-time", str(timeout), "https://ifconfig.me"],
                              capture_output=True, text=True, timeout=timeout + 2, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    text = proc.stdout.strip()
    try:
        return str(ipaddress.IPv4Address(text)) if proc.returncode == 0 else ""
    except ValueError:
        return ""


def read_existing(path: Path) -> dict[str, str]:
    """Values a previous `make init` wrote (the literal after `or`), offered as defaults on a rerun."""
    found: dict[str, str] = {}
    if not path.exists():
        return found
    for line in path.read_text().splitlines():
        m = re.match(r"^(gcp_project): .* or '([^']*)'", line)
        if m:
            found[m.group(1)] = m.group(2)
        m = re.match(r"^(gcp_zone): ([a-z0-9-]+)$", line)
        if m:
            found[m.group(1)] = m.group(2)
        m = re.match(r"^(gcp_admin_cidrs|gcp_client_cidrs): .* or (\[.*\]) }}\"$", line)
        if m:
            found[m.group(1)] = ",".join(re.findall(r"'([^']+)'", m.group(2)))
        m = re.match(r"^# hf_token_source: (\w+)(?: (.+))?$", line)
        if m:
            found["hf_token_source"] = m.group(1)
            if m.group(2):
                found["hf_token_file"] = m.group(2)
    return found


def render(project: str, zone: str, admin: list[str], client: list[str], token_source: str, token_file: str,
           sa_file: str) -> str:
    def env_or(var: str, name: str, literal: str) -> str:
        return f"{name}: \"{{{{ lookup('ansible.builtin.env', '{var}') or '{literal}' }}}}\""

    def cidrs(var: str, name: str, values: list[str]) -> str:
        listed = "[" + ", ".join(f"'{v}'" for v in values) + "]"
        return (f"{name}: \"{{{{ lookup('ansible.builtin.env', '{var}') | split(',') | map('trim') | select | list"
                f" or {listed} }}}}\"")

    today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    lines = [
        "---",
        f"# Written by `make init` on {today}. Rerun `make init` to change it, or edit it by hand.",
        "# Git-ignored. Every make target and playbook reads it (inventory/group_vars/all/, loaded",
        "# after gcp.yml and deploy.yml). An environment variable, when set, wins for one run:",
        "#   GCP_PROJECT=other-project make plan",
        "# No secret is kept here.",
        env_or("GCP_PROJECT", "gcp_project", project),
        f"gcp_zone: {zone}",
        "# Who may SSH to the VM: the control node's public IPv4 (this machine, where make runs).",
        cidrs("GCP_ADMIN_CIDRS", "gcp_admin_cidrs", admin),
        "# Who may open the voice port: the public IPv4 of the computer whose browser you talk from.",
        cidrs("GCP_CLIENT_CIDRS", "gcp_client_cidrs", client),
    ]
    if sa_file:
        lines += ["# Service-account key (the file stays where it is; only its path is kept).",
                  env_or("GCP_SERVICE_ACCOUNT_FILE", "gcp_service_account_file", sa_file)]
    lines.append(f"# hf_token_source: {token_source}{(' ' + token_file) if token_source == 'file' else ''}")
    if token_source == "env":
        lines.append("# The Hugging Face token comes from $HF_TOKEN at each run (read -rsp 'HF token: ' HF_TOKEN; export HF_TOKEN).")
    elif token_source == "file":
        lines += ["# The Hugging Face token is read at run time from this file (mode 0600); $HF_TOKEN wins when set.",
                  f"hf_token: \"{{{{ lookup('ansible.builtin.env', 'HF_TOKEN') or lookup('ansible.builtin.file', '{token_file}',"
                  " errors='ignore') | default('', true) }}\""]
    else:
        lines += ["# The Hugging Face token is the variable hf_token in the vault file",
                  "# inventory/group_vars/all/vault.yml (ansible-vault create ...; see docs/deployment.md)."]
    return "\n".join(lines) + "\n"


Ask = Callable[[str, str], str]


def prompt(question: str, default: str) -> str:
    shown = f" [{default}]" if default else ""
    answer = input(f"{question}{shown}: ").strip()
    return answer or default


def ask_until_valid(ask: Ask, question: str, default: str, check: Callable[[str], object]) -> str:
    while True:
        answer = ask(question, default)
        try:
            check(answer)
            return answer
        except InitError as exc:
            if ask is not prompt:  # non-interactive: no second chance
                raise
            print(f"  {exc}", file=sys.stderr)


def gcloud_project() -> str:
    if not shutil.which("gcloud"):
        return ""
    proc = subprocess.run(["gcloud", "config", "get-value", "project"], capture_output=True, text=True, check=False)
    value = proc.stdout.strip()
    return value if PROJECT_RE.match(value) else ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write the local settings file once (git-ignored).")
    ap.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    ap.add_argument("--project")
    ap.add_argument("--zone")
    ap.add_argument("--admin-cidrs", help="comma-separated; the control node's IPv4/32")
    ap.add_argument("--client-cidrs", help="comma-separated; the browser computer's IPv4/32 (default: the admin CIDRs)")
    ap.add_argument("--hf-token-source", choices=TOKEN_SOURCES)
    ap.add_argument("--hf-token-file", help=f"with --hf-token-source file (default {HF_CLI_TOKEN})")
    ap.add_argument("--service-account-file", default=None, help="JSON key path; empty: Application Default Credentials")
    ap.add_argument("--my-ip", help="use this as the caller's IPv4 instead of asking ifconfig.me")
    ap.add_argument("--no-ip-lookup", action="store_true", help="do not ask ifconfig.me (no Internet)")
    ap.add_argument("--yes", action="store_true", help="non-interactive: flags, then existing values, then defaults")
    args = ap.parse_args(argv)

    interactive = not args.yes and sys.stdin.isatty()
    ask: Ask = prompt if interactive else (lambda _q, default: default)
    old = read_existing(args.output)
    try:
        my_ip = args.my_ip or ("" if args.no_ip_lookup else lookup_ipv4())
        if my_ip:
            check_cidrs(my_ip)
        project = ask_until_valid(ask, "Google Cloud project ID", args.project or old.get("gcp_project") or gcloud_project(),
                                  check_project)
        zone = ask_until_valid(ask, "Zone (must offer the GPU; docs/instances-and-costs.md)",
                               args.zone or old.get("gcp_zone") or "us-central1-a", check_zone)
        mine = f"{my_ip}/32" if my_ip else ""
        if my_ip:
            origin = "as given" if args.my_ip else "from curl -4 -s https://ifconfig.me"
            print(f"This machine's public IPv4 address ({origin}): {my_ip}")
        elif not args.no_ip_lookup:
            print("Could not learn this machine's IPv4 address (curl -4 -s https://ifconfig.me); type it below.")
        admin = check_cidrs(ask_until_valid(
            ask, "SSH from (gcp_admin_cidrs: THIS machine, where make runs)",
            args.admin_cidrs or old.get("gcp_admin_cidrs") or mine, check_cidrs))
        client = check_cidrs(ask_until_valid(
            ask, "Voice port from (gcp_client_cidrs: the computer whose BROWSER you talk from)",
            args.client_cidrs or old.get("gcp_client_cidrs") or ",".join(admin), check_cidrs))
        source = ask_until_valid(
            ask, "Hugging Face token from: env ($HF_TOKEN each run), file (read at run time), vault",
            args.hf_token_source or old.get("hf_token_source") or "env",
            check_token_source)
        token_file = ""
        if source == "file":
            token_file = str(Path(ask("Token file", args.hf_token_file or old.get("hf_token_file") or str(HF_CLI_TOKEN)))
                             .expanduser().resolve())
            path = Path(token_file)
            if path.exists() and path.stat().st_mode & 0o077:
                raise InitError(f"{token_file} is readable by others: chmod 600 {token_file}")
            if not path.exists():
                print(f"  note: {token_file} does not exist yet (huggingface-cli login writes {HF_CLI_TOKEN}).")
        sa_file = args.service_account_file
        if sa_file is None:
            sa_file = ask("Service-account key file (empty: Application Default Credentials)", "")
        if sa_file:
            sa_file = str(Path(sa_file).expanduser().resolve())
    except InitError as exc:
        print(f"make init: {exc}", file=sys.stderr)
        return 2
    except (EOFError, KeyboardInterrupt):
        print("\nmake init: stopped; nothing written.", file=sys.stderr)
        return 1

    text = render(project, zone, admin, client, source, token_file, sa_file)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_name(args.output.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, args.output)  # never a half-written settings file
    print(f"Wrote {args.output}. Next: make plan (no API write), then make deploy.")
    key = Path("~/.ssh/id_ed25519").expanduser()
    if not key.with_suffix(".pub").exists():
        print(f"No SSH key at {key}: create one with  ssh-keygen -t ed25519 -f {key}  (preflight checks it).")
    if source == "vault":
        print("Vault: ansible-vault create inventory/group_vars/all/vault.yml  (one line: hf_token: hf_...),\n"
              "then run make with  ARGS=--ask-vault-pass  or  export ANSIBLE_VAULT_PASSWORD_FILE=~/.personaplex-vault-pass")
    return 0


if __name__ == "__main__":
    sys.exit(main())
