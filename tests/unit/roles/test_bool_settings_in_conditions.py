"""Every boolean setting a role declares is read through `| bool` where it decides something.

`ansible-playbook -e nvidia_driver_hold=false` passes the *string* "false", and a role's
argument spec validates it as a bool without converting it (ansible-core 2.18), so a bare
`when: nvidia_driver_hold` is true for it (checked with ansible-core 2.18.19: the task
runs, `type_debug` says str). This walks every task, handler and playbook condition
(`when`, `changed_when`, `failed_when`, `until`, assert `that`) and every Jinja block with
`if`, `and`, `or` or `not` in the tasks (`set_fact` flags included) and the roles'
templates, and fails on a bool-typed role setting used there without `| bool`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from project import REPO

CONDITION_KEYS = {"when", "changed_when", "failed_when", "until", "that"}


class _AnyTagLoader(yaml.SafeLoader):
    """Reads Ansible's own tags (!unsafe, !vault) as plain values."""


_AnyTagLoader.add_multi_constructor(
    "!", lambda loader, _suffix, node: loader.construct_scalar(node) if node.id == "scalar" else None
)


def bool_settings() -> set[str]:
    names: set[str] = set()
    for spec in REPO.glob("roles/*/meta/argument_specs.yml"):
        doc = yaml.load(spec.read_text(), Loader=_AnyTagLoader) or {}
        for entry in (doc.get("argument_specs") or {}).values():
            for name, option in (entry.get("options") or {}).items():
                if option.get("type") == "bool":
                    names.add(name)
    return names


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)


def decisions(node: Any) -> Iterator[str]:
    """Condition expressions, and templated strings holding an inline `if`."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in CONDITION_KEYS:
                yield from _strings(value)
            else:
                yield from decisions(value)
    elif isinstance(node, list):
        for item in node:
            yield from decisions(item)
    elif isinstance(node, str):  # Jinja blocks with `if`/`and`/`or`/`not`, not the prose around
        for block in re.findall(r"\{\{(.*?)\}\}|\{%(.*?)%\}", node, re.DOTALL):
            expr = "".join(block)
            if re.search(r"\b(if|and|or|not)\b", re.sub(r"'[^']*'|\"[^\"]*\"", "''", expr)):
                yield expr


def ansible_files() -> list[Path]:
    patterns = ("roles/*/tasks/*.yml", "roles/*/handlers/*.yml", "playbooks/*.yml")
    return sorted(p for pattern in patterns for p in REPO.glob(pattern))


def templates() -> list[Path]:
    return sorted(p for p in REPO.glob("roles/*/templates/**/*") if p.is_file())


def raw_uses(names: set[str]) -> list[str]:
    uses = []
    docs = [(p, yaml.load(p.read_text(), Loader=_AnyTagLoader)) for p in ansible_files()]
    docs += [(p, p.read_text(errors="replace")) for p in templates()]  # `{% if X %}`
    for path, doc in docs:
        for expr in decisions(doc):
            expr = re.sub(r"'[^']*'|\"[^\"]*\"", "''", expr)  # names inside string literals are prose
            for name in names:
                for m in re.finditer(rf"(?<![\w.]){re.escape(name)}(?!\w)", expr):
                    if not re.match(r"\s*(\|\s*default\([^)]*\)\s*)?\|\s*bool\b", expr[m.end() :]):
                        uses.append(f"{path.relative_to(REPO)}: {name} in {expr.strip()!r}")
    return uses


def test_the_scan_sees_the_role_settings_and_their_conditions():
    names = bool_settings()
    assert {"nvidia_driver_reboot_allowed", "docker_service_enabled", "cuda_toolkit_enabled"} <= names
    assert raw_uses({"nvidia_driver_reboot_allowed"}) == []
    # the scan finds a raw use when there is one (a condition as a role would write it)
    doc = {"tasks": [{"name": "x", "when": ["a", "not nvidia_driver_reboot_allowed"]}]}
    assert list(decisions(doc)) == ["a", "not nvidia_driver_reboot_allowed"]
    inline = {"state": "{{ 'started' if docker_service_enabled else 'stopped' }}"}
    assert list(decisions(inline)) == [" 'started' if docker_service_enabled else 'stopped' "]
    prose = {"msg": "set docker_service_enabled: true, then {{ 'a' if b else 'c' }}"}
    assert raw_uses.__name__ and list(decisions(prose)) == [" 'a' if b else 'c' "]


def test_bool_settings_are_read_with_the_bool_filter_in_every_decision():
    assert raw_uses(bool_settings()) == []
