"""python_venv's helpers: the GPU arch check's rule and the reproducible app wheel."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[3]
FILES = REPO / "roles" / "python_venv" / "files"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, FILES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# An arch list shaped like a CUDA 12.8 build's (the rule is what is tested here).
CU128 = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"]


@pytest.mark.parametrize(
    ("cap", "arch_list", "ok"),
    [
        ((7, 5), CU128, True),  # T4
        ((8, 9), CU128, True),  # L4 runs sm_86 cubins
        ((9, 0), CU128, True),  # H100
        ((12, 1), CU128, True),  # newer minor, same major
        ((7, 0), CU128, False),  # sm_70 not in the list
        ((6, 1), ["sm_75", "sm_80"], False),
        ((13, 0), ["sm_90", "compute_90"], True),  # PTX JIT-compiles forward
        ((8, 0), ["sm_86"], False),  # cubins do not run on a lower minor
    ],
)
def test_arch_rule(cap: tuple[int, int], arch_list: list[str], ok: bool) -> None:
    assert load("check_torch_cuda").supported(cap, arch_list) is ok


def build(app: Path, out: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, str(FILES / "build_app_wheel.py"), str(app), str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def test_app_wheel_is_reproducible_and_tracks_code(tmp_path: Path) -> None:
    app = tmp_path / "app"
    (app / "src" / "demo_pkg").mkdir(parents=True)
    (app / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "personaplex-server"\nversion = "0.1.0"\n'
        '[tool.setuptools.packages.find]\nwhere = ["src"]\n'
    )
    (app / "src" / "demo_pkg" / "__init__.py").write_text("X = 1\n")
    out = tmp_path / "out"
    first = build(app, out)
    assert first["changed"] is True
    assert build(app, out)["changed"] is False  # same sources, same bytes
    (app / "src" / "demo_pkg" / "__init__.py").write_text("X = 2\n")
    assert build(app, out)["changed"] is True
    assert not (app / "build").exists()  # built from a copy: app/ untouched


class FakeCuda:
    """torch.cuda as seen on a host: usable or not, with the given GPUs."""

    def __init__(self, available: bool, caps: list[tuple[int, int]], arch_list: list[str]):
        self.available, self.caps, self.arch_list = available, caps, arch_list

    def is_available(self) -> bool:
        return self.available

    def get_arch_list(self) -> list[str]:
        return self.arch_list

    def device_count(self) -> int:
        return len(self.caps)

    def get_device_capability(self, i: int) -> tuple[int, int]:
        return self.caps[i]

    def get_device_name(self, i: int) -> str:
        return "Tesla T4"


def fake_torch(cuda_version: str | None, available: bool, caps=((7, 5),)) -> ModuleType:
    torch = ModuleType("torch")
    torch.__version__ = "2.9.1"
    torch.version = ModuleType("torch.version")
    torch.version.cuda = cuda_version
    torch.cuda = FakeCuda(available, list(caps), CU128)

    def zeros(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("CUDA driver version is insufficient for CUDA runtime version")

    torch.zeros = zeros
    return torch


@pytest.mark.parametrize("cuda_version", [None, "12.8"])
def test_gpu_present_but_torch_cannot_use_it_fails(cuda_version: str | None) -> None:
    mod = load("check_torch_cuda")
    out = mod.check(fake_torch(cuda_version, available=False), ["/dev/nvidia0"])
    assert out["ok"] is False
    assert "/dev/nvidia0" in out["error"]
    if cuda_version is None:
        assert "CPU-only build" in out["error"]
    else:
        assert "CUDA driver version is insufficient" in out["error"]


def test_no_gpu_nothing_to_check() -> None:
    out = load("check_torch_cuda").check(fake_torch(None, available=False), [])
    assert out["ok"] is True


def test_usable_gpu_with_kernels_passes_and_without_fails() -> None:
    mod = load("check_torch_cuda")
    assert mod.check(fake_torch("12.8", available=True), ["/dev/nvidia0"])["ok"] is True
    old = mod.check(fake_torch("12.8", available=True, caps=((7, 0),)), ["/dev/nvidia0"])
    assert old["ok"] is False and "sm_70" in old["error"]


def test_main_exits_1_when_a_gpu_is_present_but_unusable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    mod = load("check_torch_cuda")
    node = tmp_path / "nvidia0"
    node.write_text("")
    monkeypatch.setattr(mod, "GPU_MARKERS", (str(node), str(tmp_path / "absent")))
    monkeypatch.setitem(sys.modules, "torch", fake_torch("12.8", available=False))
    assert mod.main() == 1
    assert json.loads(capsys.readouterr().out)["ok"] is False
