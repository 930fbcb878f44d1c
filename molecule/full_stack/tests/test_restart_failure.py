"""Bad input: a setting the server cannot start with stops the play with the server's own
reason (its last log lines), and the next run with good settings brings it back.

Runs after test_full_stack.py (file order); re-runs the converge playbook from the
control node against Molecule's inventory.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

CONVERGE = Path(__file__).resolve().parent.parent / "converge.yml"


def converge(*extra: str) -> subprocess.CompletedProcess[str]:
    cmd = ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(CONVERGE)]
    for ev in extra:
        cmd += ["-e", ev]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1200, check=False)


def test_unstartable_setting_fails_with_reason_then_recovers(host):
    bad = converge(json.dumps({"voice_server_settings": {"device": "cuda"}}))
    out = bad.stdout + bad.stderr
    assert bad.returncode != 0
    assert "did not become ready" in out
    assert "cuda" in out.lower()  # the app's own explanation, from the journal
    good = converge()
    assert good.returncode == 0, good.stdout[-3000:]
    ready = host.check_output("curl -sSk https://127.0.0.1:8998/readyz")
    assert json.loads(ready)["status"] == "ready"
