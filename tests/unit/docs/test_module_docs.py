"""Every module in plugins/modules has documentation Ansible can parse (`ansible-doc`).

A module whose DOCUMENTATION is not valid YAML still runs, but `ansible-doc` and
ansible-lint's argument checks cannot read it; this catches that before a user does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from project import REPO as ROOT

MODULES = sorted(p.stem for p in (ROOT / "plugins" / "modules").glob("*.py"))


@pytest.mark.parametrize("module", MODULES)
def test_module_documentation_parses(module: str) -> None:
    ansible_doc = Path(sys.executable).with_name("ansible-doc")
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_FORCE_COLOR": "0"}
    proc = subprocess.run(
        [str(ansible_doc), "-M", str(ROOT / "plugins" / "modules"), "--json", module],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    assert proc.returncode == 0 and module in proc.stdout, proc.stderr[-2000:]
