#!/usr/bin/env python3
"""Check that the venv's torch build has kernels for this host's GPUs.

Prints JSON {"ok": bool, "arch_list": [...], "gpus": [...], "error": str}. Without a
GPU (or a CPU-only torch) there is nothing to check and ok is true.
"""

from __future__ import annotations

import json
import sys


def supported(cap: tuple[int, int], arch_list: list[str]) -> bool:
    """sm_XY cubins run on the same major with minor >= Y; compute_XY PTX on anything newer."""
    for arch in arch_list:
        kind, _, num = arch.partition("_")
        if not num.isdigit():
            continue
        major, minor = int(num[:-1]), int(num[-1])
        if kind == "sm" and major == cap[0] and minor <= cap[1]:
            return True
        if kind == "compute" and (major, minor) <= cap:
            return True
    return False


def main() -> int:
    try:
        import torch
    except ImportError as exc:
        print(json.dumps({"ok": False, "error": f"torch does not import: {exc}"}))
        return 1
    out: dict = {"torch": torch.__version__, "cuda": torch.version.cuda, "gpus": []}
    if not torch.cuda.is_available():
        out.update(ok=True, note="no usable CUDA device: nothing to check")
        print(json.dumps(out))
        return 0
    arch_list = torch.cuda.get_arch_list()
    out["arch_list"] = arch_list
    bad = []
    for i in range(torch.cuda.device_count()):
        cap = torch.cuda.get_device_capability(i)
        name = torch.cuda.get_device_name(i)
        out["gpus"].append({"name": name, "capability": f"sm_{cap[0]}{cap[1]}"})
        if not supported(cap, arch_list):
            bad.append(f"{name} (sm_{cap[0]}{cap[1]})")
    out["ok"] = not bad
    if bad:
        out["error"] = (
            f"torch {torch.__version__} (CUDA {torch.version.cuda}) has kernels for "
            f"{', '.join(arch_list)} but not for {', '.join(bad)}: pin a torch build that "
            "supports this GPU (python_venv_torch_requirement / python_venv_index_url)"
        )
    print(json.dumps(out))
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
