"""The README's two commands must install what they use, on a machine that has nothing.

A machine where earlier sessions left the Debian packages would pass `make test` even if
the Makefile forgot a package; these tests check the Makefile itself instead: every
entry point runs the package step first, that step installs its whole list when nothing
is installed, and every tool the build and the guest tests call belongs to a package on
that list.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def make_dry(target: str) -> str:
    return subprocess.run(["make", "-n", "-C", str(ROOT), target], capture_output=True,
                          text=True, check=True, env={**os.environ, "MAKEFLAGS": ""}).stdout


def debs() -> list[str]:
    out = subprocess.run(["make", "-s", "-C", str(ROOT), "print-debs"], capture_output=True,
                         text=True, check=True).stdout
    return out.split()


@pytest.mark.parametrize("target", ["test", "run", "unit", "vm-test", "bench", "lint"])
def test_every_entry_point_installs_the_debian_packages_before_the_venv(target):
    out = make_dry(target)
    assert "dpkg-query" in out and "apt-get" in out, f"make {target} skips the package step"
    pkg = out.index("apt-get install")
    # the venv (systemd-python needs libsystemd-dev) and the project come after it
    for later in ("pip install", "pytest", "ruff"):
        if later in out:
            assert out.index(later) > pkg, f"make {target}: {later} runs before the packages"


def test_package_step_installs_the_whole_list_when_nothing_is_installed(tmp_path):
    """With a dpkg that knows no package, `make debs` asks apt-get for every one."""
    fake = tmp_path / "bin"
    fake.mkdir()
    log = tmp_path / "apt.log"
    (fake / "dpkg-query").write_text("#!/bin/sh\nexit 1\n")
    (fake / "apt-get").write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    for f in fake.iterdir():
        f.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "MAKEFLAGS": ""}
    subprocess.run(["make", "-s", "-C", str(ROOT), "debs"], env=env, check=True,
                   capture_output=True)
    calls = log.read_text().splitlines()
    assert calls[0].split()[:1] == ["update"]
    installed = calls[1].split()
    assert installed[0] == "install"
    assert set(debs()) <= set(installed)


# tools the shim build, systemd-python's build and the guest harness run, by the
# command they are found by
TOOLS = ["gcc", "pkg-config", "qemu-system-x86_64", "busybox", "cpio", "modprobe",
         "numactl", "migratepages"]


def dpkg_owners(path: str) -> set[str]:
    """Packages that own a file (`dpkg -S` prints "pkg[:arch][, pkg...]: path")."""
    res = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True)
    if res.returncode:
        return set()
    return {o.strip().split(":")[0] for o in res.stdout.splitlines()[0].rsplit(": ", 1)[0]
            .split(",")}


@pytest.mark.parametrize("tool", TOOLS)
def test_every_tool_used_comes_from_a_listed_package(tool):
    path = shutil.which(tool, path=os.environ["PATH"] + ":/usr/sbin:/sbin:/bin")
    assert path, f"{tool} is not installed: `make test` should have installed it"
    candidates = {path, os.path.realpath(path)}
    candidates |= {p.replace("/usr/", "/", 1) for p in candidates if p.startswith("/usr/")}
    owners = set().union(*(dpkg_owners(p) for p in candidates))
    assert owners & set(debs()), \
        f"{tool} ({path}) belongs to {sorted(owners)}, none of which the Makefile installs"


def test_libsystemd_headers_come_from_a_listed_package():
    assert Path("/usr/include/systemd/sd-daemon.h").exists(), "libsystemd-dev is missing"
    assert dpkg_owners("/usr/include/systemd/sd-daemon.h") & set(debs())


def test_guest_kernels_come_from_listed_packages():
    kernels = sorted(Path("/boot").glob("vmlinuz-*"))
    assert kernels, "no kernel in /boot: `make test` should have installed one"
    assert any(d.startswith("linux-image-6.12") for d in debs())
    assert "linux-image-amd64" in debs()
