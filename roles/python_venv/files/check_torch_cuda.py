#!/usr/bin/env python3
"""Check that the venv's torch can use this host's NVIDIA GPUs.

Prints JSON {"ok": bool, "arch_list": [...], "gpus": [...], "error": str}. ok is false
when a GPU is present (its device node or the driver's /proc entry exists) but torch
cannot use it (a CPU-only build, a driver too old for torch's CUDA, a missing
/dev/nvidia-uvm), or when torch has no kernels for the GPU's architecture. Without a GPU
there is nothing to check and ok is true.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

# Present when the NVIDIA driver sees a GPU (the device node of GPU 0; the driver's
# per-GPU /proc directory).
GPU_MARKERS = ("/dev/nvidia0", "/proc/driver/nvidia/gpus")


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


def gpu_present(markers: tuple[str, ...] | None = None) -> list[str]:
    """The markers of an NVIDIA GPU that exist on this host."""
    markers = GPU_MARKERS if markers is None else markers
    return [m for m in markers if os.path.exists(m) and (not os.path.isdir(m) or os.listdir(m))]


def _cuda_error(torch: Any) -> str:
    """Why CUDA is unusable, in torch's words (is_available() only says False)."""
    try:
        torch.zeros(1, device="cuda")
    except Exception as exc:  # any failure is the answer we want
        return f"{type(exc).__name__}: {exc}"
    return "torch.cuda.is_available() is False"


def check(torch: Any, present: list[str]) -> dict[str, Any]:
    """The verdict for this torch module on a host with the given GPU markers."""
    out: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda, "gpus": []}
    if not torch.cuda.is_available():
        if not present:
            out.update(ok=True, note="no NVIDIA GPU on this host: nothing to check")
            return out
        if torch.version.cuda is None:
            why = "it is a CPU-only build: install a CUDA build (python_venv_index_url, e.g. cu128)"
        else:
            why = (
                f"CUDA {torch.version.cuda} does not initialise ({_cuda_error(torch)}); check "
                "`nvidia-smi` (driver loaded, new enough for this CUDA), that /dev/nvidia-uvm "
                "exists (`nvidia-modprobe -u -c=0`) and the service's DeviceAllow rules"
            )
        out.update(
            ok=False,
            error=f"an NVIDIA GPU is present ({', '.join(present)}) but torch "
            f"{torch.__version__} cannot use it: {why}",
        )
        return out
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
    return out


def main() -> int:
    try:
        import torch
    except ImportError as exc:
        print(json.dumps({"ok": False, "error": f"torch does not import: {exc}"}))
        return 1
    out = check(torch, gpu_present())
    print(json.dumps(out))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
