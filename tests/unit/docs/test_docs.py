"""The docs a newcomer follows name only things that exist.

For README.md and docs/*.md (the path a new user reads), in code spans and fenced blocks:
- every `make TARGET` is a Makefile target;
- every repository path (playbooks/..., scripts/..., inventory/..., roles/..., ...) and every
  relative Markdown link exists;
- every setting (gcp_*, model_weights_*, voice_server_*, python_venv_*, personaplex_*, hf_token,
  ...) is declared in a role's defaults or argument specs, or in inventory/group_vars/all/;
- every fenced block names its language, and each command of a shell block starts with
  something that resolves: a make target, a script of the project, a tool in .venv/bin or
  app/.venv/bin, a shell builtin, or a documented prerequisite (gcloud, curl, git, ...).
  Bare `ansible-playbook` does not resolve: it is only in .venv/bin.

Pure text checks, no network: about a second.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from functools import cache
from pathlib import Path

import pytest
import yaml
from project import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

# Commands a newcomer installs or has on Debian 12 before this project (docs/deployment.md
# "Before you start" names them), and commands run on the VM or in the container.
PREREQUISITES = {
    "gcloud", "curl", "git", "make", "python3", "ssh", "ssh-keygen", "apt-get", "sudo", "podman",
    "systemctl", "journalctl", "cat", "ls", "chmod", "mkdir", "rm", "cp", "openssl", "nvidia-smi",
    "huggingface-cli", "tar", "df", "du",
}
SHELL_BUILTINS = {"cd", "export", "read", "source", ".", "echo", "printf", "unset", "set", "test", "[", "for", "if", "exit"}
SHELL_LANGS = {"sh", "bash", "shell", "console"}
SETTING_RE = re.compile(
    r"(?<![\w./$-])((?:gcp|model_weights|voice_server|python_venv|personaplex|nvidia_driver|cuda_toolkit|docker"
    r"|nvidia_container_toolkit|nvidia_cuda_repo)_[a-z0-9_]+|hf_token)\b")
PATH_ROOTS = ("shared/", "playbooks/", "scripts/", "inventory/", "roles/", "docs/", "tests/", "molecule/", "plugins/",
              "collections/", "app/", ".config/", ".ci/")
ROOT_FILES = {"Makefile", "ansible.cfg", "requirements.txt", "README.md"}
PATH_RE = re.compile(r"(?<![\w/.-])((?:\.?[A-Za-z_][\w.-]*/)+[\w.*-]+|Makefile|ansible\.cfg|requirements\.txt)")


def doc_id(path: Path) -> str:
    return str(path.relative_to(REPO))


@cache
def make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][a-z-]*):", (REPO / "Makefile").read_text(), re.M))


@cache
def declared_settings() -> set[str]:
    names: set[str] = set()
    for f in REPO.glob("roles/*/defaults/main.yml"):
        names |= set((yaml.safe_load(f.read_text()) or {}).keys())
    for f in REPO.glob("roles/*/meta/argument_specs.yml"):
        for spec in (yaml.safe_load(f.read_text()) or {}).get("argument_specs", {}).values():
            names |= set((spec.get("options") or {}).keys())
    for f in (REPO / "inventory" / "group_vars" / "all").glob("*.yml"):
        if not f.name.endswith(".local.yml"):
            names |= set((yaml.safe_load(f.read_text()) or {}).keys())
    # Names that exist but are not settings: the project's modules (gcp_iam_binding), roles
    # (gcp_infra), and names in the app's source (the personaplex_server package, its cookie).
    names |= {p.stem for p in (REPO / "plugins" / "modules").glob("*.py")}
    names |= {p.name for p in (REPO / "roles").iterdir()}
    for src in (REPO / "app" / "src").rglob("*.py"):
        found = set(SETTING_RE.findall(src.read_text()))
        names |= found | {f"{n}_total" for n in found}  # Prometheus exposes a Counter as NAME_total
    return names


def code_of(text: str) -> tuple[list[str], list[tuple[str, str, int]]]:
    """Inline code spans, and fenced blocks as (language, body, line number)."""
    blocks: list[tuple[str, str, int]] = []
    rest: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^\s*```(\S*)\s*$", lines[i])
        if m:
            start, lang, body = i + 1, m.group(1), []
            i += 1
            while i < len(lines) and not re.match(r"^\s*```\s*$", lines[i]):
                body.append(lines[i])
                i += 1
            blocks.append((lang, "\n".join(body), start))
        else:
            rest.append(lines[i])
        i += 1
    spans = re.findall(r"`([^`\n]+)`", "\n".join(rest))
    return spans, blocks


def prose_links(text: str) -> list[str]:
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"^[a-z]+:|^#", t)]


def shell_commands(body: str) -> list[str]:
    """One string per command: continuations joined, comments and prompts dropped, && / | / ; split."""
    joined = re.sub(r"\\\n\s*", " ", body)
    out: list[str] = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = re.sub(r"^\$\s+", "", line)
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            words = line.split()
        cmd: list[str] = []
        for w in words + ["&&"]:
            if w in ("&&", "||", "|", ";"):
                if cmd:
                    out.append(" ".join(cmd))
                cmd = []
            else:
                cmd.append(w)
    return out


def first_word_problem(command: str) -> str:
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):  # VAR=value prefixes
        words = words[1:]
    if not words:
        return ""
    word = words[0]
    if word == "make":
        targets = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
        missing = [t for t in targets if t not in make_targets()]
        return f"make target(s) {missing} not in the Makefile" if missing else ""
    if word in SHELL_BUILTINS or word in PREREQUISITES:
        return ""
    if word.startswith((".venv/bin/", "app/.venv/bin/")):
        tool = word.rsplit("/", 1)[-1]
        return "" if tool in VENV_TOOLS else f"{word}: {tool} is not a tool of the project's venvs"
    if "/" in word:
        return "" if (REPO / word).exists() else f"{word} does not exist"
    if word in VENV_TOOLS:
        return f"bare {word!r} is not on a newcomer's PATH: write .venv/bin/{word} (or the make target)"
    return f"{word!r} is neither a make target, a project script, a .venv tool nor a documented prerequisite"


# Tools the pinned venvs provide (requirements.txt, app[test]): named, not looked up,
# so the test does not depend on which venvs happen to be built.
VENV_TOOLS = {"ansible-playbook", "ansible-inventory", "ansible-vault", "ansible", "ansible-galaxy", "ansible-lint",
              "yamllint", "molecule", "pytest", "pip", "python", "personaplex-server", "ruff", "mypy"}


def path_problem(doc: Path, token: str) -> str:
    token = token.rstrip(".,:;)")
    if token.startswith(("/", "~", "http", "$")) or "{" in token or "<" in token or re.search(r"[A-Z]{3,}", token):
        return ""  # host paths, URLs, variables, placeholders (PROJECT, NAME)
    if re.match(r"^roles/[a-z]+\.[A-Za-z]+$", token):
        return ""  # an IAM role (roles/storage.objectUser), not a folder
    if token in ROOT_FILES:
        return "" if (REPO / token).exists() else f"{token} does not exist"
    if not token.startswith(PATH_ROOTS):
        return ""
    matches = list(REPO.glob(token)) if "*" in token else ([REPO / token] if (REPO / token).exists() else [])
    if not matches and any(fnmatch.fnmatch(token, pat) for pat in ignored_patterns()):
        return ""  # a file the user or a command creates (settings.local.yml, vault.yml): git-ignored
    return "" if matches else f"{token} does not exist (in {doc_id(doc)})"


@cache
def ignored_patterns() -> list[str]:
    lines = (REPO / ".gitignore").read_text().splitlines()
    return [ln.strip().rstrip("/") + ("*" if ln.strip().endswith("/") else "") for ln in lines
            if ln.strip() and not ln.startswith("#") and "/" in ln.strip().rstrip("/")]


@pytest.mark.parametrize("doc", DOCS, ids=doc_id)
def test_paths_and_links_exist(doc: Path) -> None:
    text = doc.read_text()
    spans, blocks = code_of(text)
    problems = []
    for chunk in spans + [b for lang, b, _ in blocks if lang != "text"]:
        problems += [p for p in (path_problem(doc, t) for t in PATH_RE.findall(chunk)) if p]
    for link in prose_links(text):
        target = (doc.parent / link.split("#", 1)[0]).resolve()
        if not target.exists():
            problems.append(f"link {link} -> {target} does not exist")
    assert not problems, "\n".join(sorted(set(problems)))


@pytest.mark.parametrize("doc", DOCS, ids=doc_id)
def test_settings_are_declared(doc: Path) -> None:
    spans, blocks = code_of(doc.read_text())
    named = set()
    for chunk in spans + [b for _lang, b, _ in blocks]:
        named |= set(SETTING_RE.findall(chunk))
    undeclared = sorted(named - declared_settings())
    assert not undeclared, f"settings named in {doc_id(doc)} but declared nowhere: {undeclared}"


@pytest.mark.parametrize("doc", DOCS, ids=doc_id)
def test_fenced_commands_resolve(doc: Path) -> None:
    spans, blocks = code_of(doc.read_text())
    problems = [f"line {line}: a fenced block names no language (sh, yaml, text, ...)" for lang, _b, line in blocks if not lang]
    for lang, body, line in blocks:
        if lang in SHELL_LANGS:
            problems += [f"line {line}: {p}" for p in (first_word_problem(c) for c in shell_commands(body)) if p]
    # Inline commands too: `make X`, `ansible-playbook ...` in prose code spans.
    for span in spans:
        if re.match(r"^(make|ansible-playbook|molecule|pytest|ansible-inventory|ansible-vault)\b", span):
            p = first_word_problem(span)
            if p:
                problems.append(f"`{span}`: {p}")
    assert not problems, "\n".join(problems)


def test_the_checks_catch_what_they_name() -> None:
    """The helpers reject the mistakes this test exists for (so a pass means something)."""
    assert "bare 'ansible-playbook'" in first_word_problem("ansible-playbook playbooks/site.yml")
    assert "not in the Makefile" in first_word_problem("make no-such-target")
    assert first_word_problem("HF_TOKEN=x make deploy") == ""
    assert "does not exist" in path_problem(REPO / "README.md", "shared/docs/personaplex.md") or \
        "does not exist" in path_problem(REPO / "README.md", "docs/no-such.md")
    assert "model_weights_no_such" not in declared_settings() and "gcp_project" in declared_settings()
    assert shell_commands("read -rsp 'x: ' T && export T   # c\nmake \\\n  deploy") == ["read -rsp x:  T", "export T", "make deploy"]
