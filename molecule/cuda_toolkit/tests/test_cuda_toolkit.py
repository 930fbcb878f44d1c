"""cuda_toolkit role against the stand-in NVIDIA repository.

Runs on the control node; `host` is the molecule container. The toolkit packages
are stand-ins (a stub nvcc, a tiny real libcudart ELF); apt, the profile script,
ld.so.conf.d and the linker cache are real.
"""

from __future__ import annotations

HOME = "/usr/local/cuda-12.8"


def test_pinned_toolkit_installed(host):
    pkg = host.package("cuda-toolkit-12-8")
    assert pkg.is_installed
    assert pkg.version == "12.8.1-1"
    # The repository also offers 12.9; the pin must win over "newest".
    assert not host.package("cuda-toolkit-12-9").is_installed


def test_repository_source_from_shared_role(host):
    f = host.file("/etc/apt/sources.list.d/cuda.sources")
    assert "Signed-By: /usr/share/keyrings/cuda-archive-keyring.gpg" in f.content_string
    assert "URIs: http://127.0.0.1:8765/compute/cuda/repos/debian12/x86_64/" in f.content_string


def test_profile_puts_nvcc_on_path(host):
    f = host.file("/etc/profile.d/cuda-toolkit.sh")
    assert f.is_file
    assert f.mode == 0o644
    # A login shell reads /etc/profile.d: nvcc resolves to the pinned toolkit.
    assert host.check_output("bash -lc 'command -v nvcc'") == f"{HOME}/bin/nvcc"
    assert host.check_output("bash -lc 'echo $CUDA_HOME'") == HOME
    assert "release 12.8" in host.check_output("bash -lc 'nvcc --version'")


def test_profile_does_not_duplicate_path(host):
    path = host.check_output("bash -lc '. /etc/profile.d/cuda-toolkit.sh; echo $PATH'")
    assert path.split(":").count(f"{HOME}/bin") == 1


def test_ld_so_conf_lists_toolkit_libraries(host):
    f = host.file("/etc/ld.so.conf.d/cuda-toolkit.conf")
    assert f.is_file
    assert f"{HOME}/lib64" in [line.strip() for line in f.content_string.splitlines()]


def test_linker_cache_knows_libcudart(host):
    # Only true if the role wrote ld.so.conf.d and ran ldconfig (the stand-in
    # package ships no linker configuration of its own).
    cache = host.check_output("ldconfig -p")
    entries = [line for line in cache.splitlines() if "libcudart.so.12 " in line]
    assert entries, cache
    assert entries[0].rstrip().endswith(f"{HOME}/lib64/libcudart.so.12")
