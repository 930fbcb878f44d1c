#!/usr/bin/env python3
"""Build the app's wheel on the control node, reproducibly, without touching app/.

Usage: build_app_wheel.py APP_DIR OUT_DIR
Copies APP_DIR (pyproject, README, src/) to a temporary folder, runs `pip wheel
--no-deps` there with a fixed SOURCE_DATE_EPOCH (identical sources give an identical
wheel, so the copy to the hosts reports `changed` only when the code changed), and
puts the wheel into OUT_DIR. Prints JSON: {"wheel": path, "changed": bool}.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SKIP = shutil.ignore_patterns(
    "__pycache__",
    "*.pyc",
    "*.egg-info",
    ".venv",
    "build",
    "dist",
    ".ruff_cache",
    ".mypy_cache",
    ".pytest_cache",
    "tests",
)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(app_dir: str, out_dir: str) -> int:
    app = Path(app_dir).resolve()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not (app / "pyproject.toml").is_file():
        print(json.dumps({"error": f"{app} has no pyproject.toml: set python_venv_app_src"}))
        return 1
    with tempfile.TemporaryDirectory(prefix="app-wheel-") as tmp:
        src = Path(tmp) / "app"
        shutil.copytree(app, src, ignore=SKIP)
        built = Path(tmp) / "wheel"
        env = {**os.environ, "SOURCE_DATE_EPOCH": "315532800", "PIP_NO_INPUT": "1"}
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(built), str(src)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            print(json.dumps({"error": "building the app wheel failed: " + proc.stderr[-2000:]}))
            return 1
        (wheel,) = built.glob("*.whl")
        final = out / wheel.name
        changed = not final.is_file() or sha256(final) != sha256(wheel)
        if changed:
            shutil.copyfile(wheel, final.with_suffix(".tmp"))
            os.replace(final.with_suffix(".tmp"), final)
        for old in out.glob("personaplex_server-*.whl"):
            if old != final:
                old.unlink()
                changed = True
    print(json.dumps({"wheel": str(final), "name": final.name, "changed": changed}))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
