#!/usr/bin/env python3
"""Boot a two-NUMA-node QEMU guest and run one command in it; exit with its status.

    python tests/vm/harness.py [--hmat] [--kernel K] [--timeout S] -- CMD [ARG...]

Guest: node 0 has both vCPUs and --node-mib of memory, node 1 is CPU-less with the
same amount (a "CXL expander"), SLIT distance 20.  With --hmat, ACPI HMAT describes
node 1 as slower (300 ns, 5 GB/s against 100 ns, 20 GB/s), so Linux 6.12 puts it in
a lower memory tier; 6.1 ignores HMAT for tiering.

How the project reaches the guest: the host's root filesystem is shared read-only
over virtio-9p and the guest chroots into it, so the guest runs the very same
interpreter, virtual environment and checkout as the host (no copy, no second
install).  Inside the chroot /proc, /sys, /dev, /dev/shm, /tmp and /run are the
guest's own (a working directory under the host's /tmp or /run is bind-mounted
back, read-only, so a checkout there works); CMD runs in the current directory with RECMG_IN_GUEST=1 and
PYTHONDONTWRITEBYTECODE=1 (the shared tree is read-only).  With --out DIR, DIR is
shared writable and the command finds it at $RECMG_VM_OUT.

Automatic NUMA balancing is switched off in the guest (kernel.numa_balancing=0)
unless --numa-balancing is given: its hinting faults move pages back to the CPU's
node and make placement checks flaky (shared/docs/numa-vm.md, pitfall 1).

Accelerator: KVM where a hardware KVM module is loaded and /dev/kvm is usable and not
PVM (nested PVM cannot run stock kernels), TCG otherwise.  Under TCG the CPU is
QEMU's ``max`` without AVX2: QEMU 7.2's TCG (Debian 12) faults on an AVX2 sort that
hardware runs, so recmgd died in the guest on numpy's sorts of arrays that end at a
page followed by unmapped memory (tests/vm/test_guest.py checks the guest's CPU).

Exit status: the command's, carried out of the guest by an @@GUEST_EXIT=N@@ marker on
the serial console; 125 when no marker came (timeout, guest crash); 2 for a host
setup problem (no qemu, no kernel, no busybox).
"""

from __future__ import annotations

import argparse
import gzip
import io
import lzma
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODULES = ["virtio_pci", "9pnet_virtio", "9p"]
MARKER = re.compile(rb"@@GUEST_EXIT=(\d+)@@")
ANSI = re.compile(rb"\x1b\[[0-9;?]*[a-zA-Z]")

INIT = r"""#!/bin/sh
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /modules.order); do insmod "$m" 2>/dev/null; done
mkdir -p /host
if ! mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 hostroot /host; then
    echo "guest: cannot mount the host root over 9p"; echo "@@GUEST_EXIT=2@@"; poweroff -f
fi
mount -t proc proc /host/proc; mount -t sysfs sys /host/sys; mount -t devtmpfs dev /host/dev
mkdir -p /host/dev/shm /host/dev/pts /hosttmp /hostrun
# Keep read-only views of the host's /tmp and /run before the guest's own tmpfs hide
# them: a checkout under /tmp (a CI clone, say) is bind-mounted back below.
mount --bind /host/tmp /hosttmp; mount --bind /host/run /hostrun
mount -t tmpfs -o mode=1777 shm /host/dev/shm; mount -t tmpfs -o mode=1777 tmp /host/tmp
mount -t tmpfs run /host/run
CWD=@CWD@
for d in tmp run; do
    case "$CWD" in /$d/*) mkdir -p "/host$CWD"; mount --bind "/host$d${CWD#/$d}" "/host$CWD";; esac
done
OUT_ENV=
if [ -n "$WITH_OUT" ]; then
    mkdir -p /host/run/recmg-vm-out
    mount -t 9p -o trans=virtio,version=9p2000.L,cache=none,msize=262144 vmout /host/run/recmg-vm-out \
        && OUT_ENV=RECMG_VM_OUT=/run/recmg-vm-out
fi
[ -d /host/sys/kernel/mm/damon ] && mount -t debugfs none /host/sys/kernel/debug 2>/dev/null
# damo checks kernel features through tracefs (a host has it mounted; the guest must)
mount -t tracefs none /host/sys/kernel/tracing 2>/dev/null
mount -t cgroup2 none /host/sys/fs/cgroup 2>/dev/null
echo "${NUMA_BALANCING:-0}" > /proc/sys/kernel/numa_balancing
cp /cmd.sh /host/tmp/recmg-guest-cmd.sh
echo "@@CMD_START@@"
chroot /host /usr/bin/env -i PATH=@HOST_PATH@ HOME=/tmp TMPDIR=/tmp LANG=C.UTF-8 \
    RECMG_IN_GUEST=1 PYTHONDONTWRITEBYTECODE=1 $OUT_ENV /bin/sh /tmp/recmg-guest-cmd.sh
rc=$?
echo "@@GUEST_EXIT=$rc@@"
poweroff -f
"""


def find_kernel(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    kernels = sorted(Path("/boot").glob("vmlinuz-*"),
                     key=lambda p: [int(x) if x.isdigit() else x
                                    for x in re.split(r"(\d+)", p.name)])
    if not kernels:
        raise SystemExit("harness: no kernel in /boot; install one "
                         "(apt-get install linux-image-amd64) or pass --kernel")
    return kernels[-1]


def module_paths(kver: str) -> list[Path]:
    """insmod order for the 9p-over-virtio stack, from modprobe --show-depends."""
    out: list[Path] = []
    for mod in MODULES:
        res = subprocess.run(["modprobe", "-S", kver, "--show-depends", mod],
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(f"harness: cannot resolve module {mod} for kernel {kver}: "
                             f"{res.stderr.strip()} (is the matching linux-image installed?)")
        for line in res.stdout.splitlines():
            parts = line.split()
            if parts and parts[0] == "insmod" and Path(parts[1]) not in out:
                out.append(Path(parts[1]))
    return out


def build_initramfs(kver: str, command: list[str], cwd: str, work: Path) -> Path:
    root = work / "root"
    (root / "bin").mkdir(parents=True)
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not Path(busybox).exists():
        raise SystemExit("harness: busybox not found (apt-get install busybox-static)")
    shutil.copy(busybox, root / "bin/busybox")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True).stdout.split()
    for a in applets:
        if a != "busybox":
            (root / "bin" / a).symlink_to("busybox")
    order = []
    for i, src in enumerate(module_paths(kver)):
        data = src.read_bytes()
        if src.suffix == ".xz":
            data = lzma.decompress(data)
        elif src.suffix == ".zst":
            data = subprocess.run(["zstd", "-dc", str(src)], capture_output=True,
                                  check=True).stdout
        dst = root / "mod" / f"{i:02d}-{src.name.split('.ko')[0]}.ko"
        dst.parent.mkdir(exist_ok=True)
        dst.write_bytes(data)
        order.append("/mod/" + dst.name)
    (root / "modules.order").write_text("\n".join(order) + "\n")
    for d in ("proc", "sys", "dev", "tmp"):
        (root / d).mkdir()
    init = (INIT.replace("@HOST_PATH@", shlex.quote(os.environ.get("PATH", "/usr/bin:/bin")))
            .replace("@CWD@", shlex.quote(cwd)))
    (root / "init").write_text(init)
    (root / "init").chmod(0o755)
    (root / "cmd.sh").write_text(f"cd {shlex.quote(cwd)} || exit 2\nexec {shlex.join(command)}\n")
    image = work / "initramfs.cpio.gz"
    listing = subprocess.run(["find", "."], cwd=root, capture_output=True, check=True).stdout
    cpio = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=root, input=listing,
                          capture_output=True, check=True).stdout
    image.write_bytes(gzip.compress(cpio, compresslevel=1))
    return image


def pick_accel(requested: str) -> str:
    if requested != "auto":
        return requested
    hw = Path("/sys/module/kvm_intel").exists() or Path("/sys/module/kvm_amd").exists()
    usable = os.access("/dev/kvm", os.R_OK | os.W_OK)
    return "kvm" if hw and usable and not Path("/sys/module/kvm_pvm").exists() else "tcg"


def qemu_command(kernel: Path, initrd: Path, accel: str, node_mib: int, hmat: bool,
                 append: str, out_dir: Path | None = None) -> list[str]:
    # TCG without AVX2: numpy 2.4's AVX2 sort (x86-simd-sort) segfaults under QEMU 7.2's
    # TCG on an array that ends at a page followed by unmapped memory (as
    # tests/vm/test_guest.py shows), and did so in recmgd's worker; the same sort on
    # hardware does not fault.  Without AVX2 numpy dispatches its SSE code.
    cpu = ["-accel", "kvm", "-cpu", "host"] if accel == "kvm" else \
        ["-accel", "tcg", "-cpu", "max,avx2=off"]
    numa = ["-object", f"memory-backend-ram,id=m0,size={node_mib}M",
            "-object", f"memory-backend-ram,id=m1,size={node_mib}M",
            "-numa", "node,nodeid=0,cpus=0-1,memdev=m0"]
    if hmat:
        numa = ["-machine", "q35,hmat=on", *numa, "-numa", "node,nodeid=1,memdev=m1,initiator=0"]
        for target, lat, bw in ((0, 100, "20G"), (1, 300, "5G")):
            base = f"hmat-lb,initiator=0,target={target},hierarchy=memory"
            numa += ["-numa", f"{base},data-type=access-latency,latency={lat}",
                     "-numa", f"{base},data-type=access-bandwidth,bandwidth={bw}"]
    else:
        numa = ["-machine", "q35", *numa, "-numa", "node,nodeid=1,memdev=m1"]
    return ["qemu-system-x86_64", *cpu, "-smp", "2", "-m", f"{2 * node_mib}M", *numa,
            "-numa", "dist,src=0,dst=1,val=20",
            "-kernel", str(kernel), "-initrd", str(initrd),
            "-append", f"console=ttyS0 panic=-1 quiet loglevel=3 rdinit=/init {append}",
            "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,"
                       "multidevs=remap",
            *(["-virtfs", f"local,path={out_dir},mount_tag=vmout,security_model=none"]
              if out_dir else []),
            "-display", "none", "-vga", "none", "-serial", "stdio", "-monitor", "none",
            "-nodefaults", "-no-reboot"]


class _Tee:
    """Streams the console live and keeps a copy (to tell a boot flake)."""

    def __init__(self, out):
        self.out, self.copy = out, io.BytesIO()

    def write(self, data: bytes) -> None:
        self.out.write(data)
        self.copy.write(data)

    def flush(self) -> None:
        self.out.flush()


def run(command: list[str], *, out=sys.stdout.buffer, **kw) -> int:
    """Boot the guest, run command, stream the console to out; return the exit status.

    Keyword arguments are those of boot_once().  A guest that dies within 30 s without
    an exit marker and without reaching the command (a boot flake, seen once in about
    a hundred boots under TCG) is booted once more; its console goes to stderr first.
    """
    t0 = time.monotonic()
    first = _Tee(out)
    rc = boot_once(command, out=first, **kw)
    text = first.copy.getvalue()
    if rc == 125 and time.monotonic() - t0 < 30 and b"@@CMD_START@@" not in text:
        sys.stderr.write("harness: the guest died before the command started "
                         "(console above); booting once more\n")
        rc = boot_once(command, out=out, **kw)
    return rc


def boot_once(command: list[str], *, kernel: str | None = None, hmat: bool = False,
              accel: str = "auto", timeout: float = 900, node_mib: int = 1024,
              numa_balancing: bool = False, cwd: str | None = None,
              out_dir: str | None = None, out=sys.stdout.buffer) -> int:
    """One boot.  out_dir: a host directory the command can write to, as
    $RECMG_VM_OUT in the guest."""
    if not shutil.which("qemu-system-x86_64"):
        print("harness: qemu-system-x86_64 not found (apt-get install qemu-system-x86)",
              file=sys.stderr)
        return 2
    kpath = find_kernel(kernel)
    kver = kpath.name.removeprefix("vmlinuz-")
    acc = pick_accel(accel)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="recmg-vm-") as tmp:
        initrd = build_initramfs(kver, command, cwd or os.getcwd(), Path(tmp))
        append = " ".join((["NUMA_BALANCING=1"] if numa_balancing else [])
                          + (["WITH_OUT=1"] if out_dir else []))
        argv = qemu_command(kpath, initrd, acc, node_mib, hmat, append,
                            Path(out_dir).resolve() if out_dir else None)
        print(f"harness: kernel {kver}, accel {acc}, nodes 2 x {node_mib} MiB"
              f"{', HMAT' if hmat else ''}; running: {shlex.join(command)}", file=sys.stderr,
              flush=True)
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        rc, tail = None, b""
        deadline = t0 + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    print(f"\nharness: timed out after {timeout:.0f} s", file=sys.stderr)
                    break
                ready, _, _ = select.select([proc.stdout], [], [], min(left, 1.0))
                if not ready:
                    continue
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                clean = ANSI.sub(b"", chunk)
                out.write(clean)
                out.flush()
                tail = (tail + clean)[-4096:]
                m = MARKER.search(tail)
                if m:
                    rc = int(m.group(1))
        finally:
            if proc.poll() is None:
                try:
                    proc.wait(timeout=20 if rc is not None else 0.1)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
    print(f"harness: guest exit {rc if rc is not None else 'none'}, "
          f"{time.monotonic() - t0:.1f} s", file=sys.stderr)
    return 125 if rc is None else rc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kernel", help="guest kernel image (default: newest /boot/vmlinuz-*)")
    p.add_argument("--hmat", action="store_true", help="describe node 1 as slower via HMAT")
    p.add_argument("--accel", choices=["auto", "kvm", "tcg"], default="auto")
    p.add_argument("--timeout", type=float, default=900, help="seconds (default 900)")
    p.add_argument("--node-mib", type=int, default=1024, help="memory per node in MiB")
    p.add_argument("--numa-balancing", action="store_true",
                   help="leave automatic NUMA balancing on in the guest")
    p.add_argument("--out", help="host directory the guest command may write to "
                   "($RECMG_VM_OUT inside the guest)")
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        p.error("give a command to run in the guest after --")
    return run(cmd, kernel=args.kernel, hmat=args.hmat, accel=args.accel,
               timeout=args.timeout, node_mib=args.node_mib,
               numa_balancing=args.numa_balancing, out_dir=args.out)


if __name__ == "__main__":
    sys.exit(main())
