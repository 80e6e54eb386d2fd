"""perf-derived counters for a target process (perf_event_open(2) via the shim).

``PerfCounters(pid)`` opens what the host supports and records what it does not:
- everywhere: page faults (minor and major) and task clock (software events);
- with a PMU: instructions, cache misses, LLC read accesses and misses (hardware and
  hardware-cache events);
``AddressSampler(pid)`` samples data addresses:
- memory-load sampling (Intel ``cpu/mem-loads`` with PEBS, AMD ``ibs_op``) where the
  PMU offers it;
- page-fault sampling (software event, PERF_SAMPLE_ADDR gives the faulting address)
  everywhere, which is what a VM without a PMU can still tell.

Counting events use inherit=1 so the target's threads are included; values are
scaled by time_enabled/time_running when the kernel multiplexed them.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

import numpy as np

from recmg import native

L = native.lib
_READ_FORMAT = L.PERF_FORMAT_TOTAL_TIME_ENABLED | L.PERF_FORMAT_TOTAL_TIME_RUNNING


def _cache(cache: int, op: int, result: int) -> int:
    return cache | (op << 8) | (result << 16)


EVENTS: dict[str, tuple[int, int]] = {
    "page_faults": (L.PERF_TYPE_SOFTWARE, L.PERF_COUNT_SW_PAGE_FAULTS),
    "major_faults": (L.PERF_TYPE_SOFTWARE, L.PERF_COUNT_SW_PAGE_FAULTS_MAJ),
    "task_clock_ns": (L.PERF_TYPE_SOFTWARE, L.PERF_COUNT_SW_TASK_CLOCK),
    "instructions": (L.PERF_TYPE_HARDWARE, L.PERF_COUNT_HW_INSTRUCTIONS),
    "cache_misses": (L.PERF_TYPE_HARDWARE, L.PERF_COUNT_HW_CACHE_MISSES),
    "llc_loads": (L.PERF_TYPE_HW_CACHE, _cache(L.PERF_COUNT_HW_CACHE_LL,
                                               L.PERF_COUNT_HW_CACHE_OP_READ,
                                               L.PERF_COUNT_HW_CACHE_RESULT_ACCESS)),
    "llc_load_misses": (L.PERF_TYPE_HW_CACHE, _cache(L.PERF_COUNT_HW_CACHE_LL,
                                                     L.PERF_COUNT_HW_CACHE_OP_READ,
                                                     L.PERF_COUNT_HW_CACHE_RESULT_MISS)),
}


class PerfCounters:
    """Counting events on pid.  ``supported`` and ``unsupported`` (name -> reason)
    say what this host gives; ``read()`` returns the supported ones."""

    def __init__(self, pid: int, events: list[str] | None = None):
        self.pid = pid
        self.fds: dict[str, int] = {}
        self.unsupported: dict[str, str] = {}
        for name in events or list(EVENTS):
            etype, config = EVENTS[name]
            attr = native.PerfAttr(type=etype, config=config, read_format=_READ_FORMAT,
                                   inherit=True, disabled=False)
            try:
                self.fds[name] = native.perf_event_open(attr, pid)
            except native.NativeProcessLookupError:
                self.close()
                raise
            except native.NativeError as e:
                self.unsupported[name] = os.strerror(e.errno)

    @property
    def supported(self) -> list[str]:
        return list(self.fds)

    def read(self) -> dict[str, int]:
        out = {}
        for name, fd in self.fds.items():
            value, enabled, running = (int(x) for x in native.perf_read(fd, 3))
            out[name] = value if running in (0, enabled) else int(value * enabled / running)
        return out

    def close(self) -> None:
        for fd in self.fds.values():
            native.close(fd)
        self.fds.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _pmu_type(name: str, sys_root: str = "/sys") -> int | None:
    p = Path(sys_root, "bus/event_source/devices", name, "type")
    try:
        return int(p.read_text())
    except (FileNotFoundError, ValueError):
        return None


# perf_event_mmap_page: data_head at 1024, data_tail at 1032 (include/uapi/linux/perf_event.h)
_DATA_HEAD, _DATA_TAIL, _DATA_OFFSET, _DATA_SIZE = 1024, 1032, 1040, 1048
_PERF_RECORD_SAMPLE = 9
_HDR = struct.Struct("<IHH")


class AddressSampler:
    """Samples data addresses of pid into a perf ring buffer (PERF_SAMPLE_ADDR).

    kind: "mem-loads" (PMU load sampling, where available) or "page-faults"
    (software, everywhere).  ``drain()`` returns the sampled addresses (uint64).
    """

    def __init__(self, pid: int, kind: str = "auto", period: int = 1, ring_pages: int = 64,
                 sys_root: str = "/sys"):
        self.pid = pid
        attr = None
        if kind in ("auto", "mem-loads"):
            attr = self._mem_loads_attr(period, sys_root)
            if attr is None and kind == "mem-loads":
                raise native.NativeUnsupportedError(
                    95, "perf_event_open", pid=pid,
                    hint="this CPU offers no load sampling (no cpu/events/mem-loads, "
                         "no ibs_op PMU); use kind='page-faults'")
        faults = native.PerfAttr(type=L.PERF_TYPE_SOFTWARE, config=L.PERF_COUNT_SW_PAGE_FAULTS,
                                 sample_period=period,
                                 sample_type=L.PERF_SAMPLE_TID | L.PERF_SAMPLE_ADDR,
                                 disabled=False, exclude_kernel=False, inherit=False)
        self.kind = "mem-loads" if attr is not None else "page-faults"
        try:
            self.fd = native.perf_event_open(attr or faults, pid)
        except native.NativeProcessLookupError:
            raise
        except native.NativeError:
            if kind != "auto" or attr is None:
                raise
            # the PMU is described but refuses (paranoid level, VM): page faults still work
            self.kind = "page-faults"
            self.fd = native.perf_event_open(faults, pid)
        if ring_pages & (ring_pages - 1):
            raise ValueError("ring_pages must be a power of two")
        try:
            self._mm = mmap.mmap(self.fd, (1 + ring_pages) * mmap.PAGESIZE, mmap.MAP_SHARED,
                                 mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError:
            native.close(self.fd)
            raise
        self._words = native.SharedU64(self._mm)
        self.lost = 0

    @staticmethod
    def _mem_loads_attr(period: int, sys_root: str):
        st = L.PERF_SAMPLE_TID | L.PERF_SAMPLE_ADDR
        cpu = Path(sys_root, "bus/event_source/devices/cpu/events/mem-loads")
        if cpu.exists():  # Intel: event=0xcd,umask=0x1,ldlat=3 (PEBS, precise)
            text = cpu.read_text().strip()
            fields = dict(kv.split("=") for kv in text.split(",") if "=" in kv)
            config = int(fields.get("event", "0xcd"), 0) | (int(fields.get("umask", "0x1"), 0) << 8)
            return native.PerfAttr(type=L.PERF_TYPE_RAW, config=config, config1=3,
                                   sample_period=max(period, 1000), sample_type=st,
                                   precise_ip=2, disabled=False)
        ibs = _pmu_type("ibs_op", sys_root)
        if ibs is not None:  # AMD IBS op sampling: data addresses of sampled ops
            return native.PerfAttr(type=ibs, config=0, sample_period=max(period, 100000),
                                   sample_type=st, disabled=False, exclude_kernel=False,
                                   exclude_hv=False)
        return None

    def drain(self) -> np.ndarray:
        """Addresses sampled since the last drain."""
        head = self._words.load_acquire(_DATA_HEAD)
        tail = self._words.load_acquire(_DATA_TAIL)
        off, size = struct.unpack_from("<QQ", self._mm, _DATA_OFFSET)
        out = []
        while tail < head:
            pos = off + tail % size
            hdr = self._read(pos, off, size, _HDR.size)
            rtype, _misc, rsize = _HDR.unpack(hdr)
            if rsize < _HDR.size:
                break  # corrupt record: stop, the next drain resyncs after head
            if rtype == _PERF_RECORD_SAMPLE:
                body = self._read(off + (tail + _HDR.size) % size, off, size, 16)
                out.append(struct.unpack_from("<Q", body, 8)[0])  # pid,tid then addr
            elif rtype == 2:  # PERF_RECORD_LOST: id, lost
                body = self._read(off + (tail + _HDR.size) % size, off, size, 16)
                self.lost += struct.unpack_from("<Q", body, 8)[0]
            tail += rsize
        self._words.store_release(_DATA_TAIL, head)
        return np.array(out, dtype=np.uint64)

    def _read(self, pos: int, off: int, size: int, n: int) -> bytes:
        end = off + size
        if pos + n <= end:
            return self._mm[pos:pos + n]
        first = end - pos
        return self._mm[pos:end] + self._mm[off:off + n - first]

    def close(self) -> None:
        if getattr(self, "_mm", None) is not None:
            del self._words
            self._mm.close()
            self._mm = None
            native.close(self.fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


TICK_EVENTS = ("cpu_time_ns", "page_faults", "major_faults", "llc_load_misses")
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_counts(pid: int, proc_root: str = "/proc") -> dict[str, int]:
    """CPU time (user + system, ns, at the kernel's clock-tick resolution: 10 ms with
    USER_HZ 100) and page faults (minor + major, and major) of the whole process, from
    /proc/PID/stat (proc(5): fields 10, 12, 14, 15; the threads that exited included)."""
    text = Path(proc_root, str(pid), "stat").read_text()
    f = text[text.rindex(")") + 2:].split()  # after "pid (comm) ": field 3 is f[0]
    minflt, majflt, utime, stime = int(f[7]), int(f[9]), int(f[11]), int(f[12])
    return {"cpu_time_ns": (utime + stime) * 1_000_000_000 // _CLK_TCK,
            "page_faults": minflt + majflt, "major_faults": majflt}


class TickCounters:
    """recmgd's per-target counters, read once a tick: CPU time and page faults from
    /proc/PID/stat (everywhere, no permission beyond reading the target's /proc), LLC
    load misses (perf, counting) and memory-load samples (perf, PMU sampling) where the
    host has a PMU.  Whatever cannot be read is listed with its reason and never stops
    the target.

    Why not perf's software events for CPU time and faults: opening and closing them
    flips static keys in the scheduler and page-fault paths, and the kernel patches
    its own text to do it (text_poke_bp).  Under an emulated guest (QEMU TCG) that
    patching raced a fault on the other vCPU and took the guest kernel down ("Oops:
    int3" in do_user_addr_fault, Linux 6.12); /proc gives the same counts without it."""

    def __init__(self, pid: int, sample_loads: bool = True, proc_root: str = "/proc"):
        self.pid, self.proc_root = pid, proc_root
        self.totals: dict[str, int] = {}
        self.last: dict[str, int] = {}
        self.unsupported: dict[str, str] = {}
        try:
            self.counters: PerfCounters | None = PerfCounters(pid, ["llc_load_misses"])
            self.unsupported.update(self.counters.unsupported)
        except (native.NativeError, OSError) as e:
            self.counters = None
            self.unsupported["llc_load_misses"] = str(e)
        self.loads: AddressSampler | None = None
        if sample_loads:
            try:
                self.loads = AddressSampler(pid, "mem-loads", period=10007)
            except (native.NativeError, OSError) as e:
                self.unsupported["memory_load_samples"] = str(e).split(";")[0]

    def tick(self) -> dict[str, int]:
        """Counts since the previous tick (the first: since the process started for
        /proc's, since attach for perf's)."""
        now: dict[str, int] = {}
        try:
            now.update(proc_counts(self.pid, self.proc_root))
        except (OSError, ValueError, IndexError) as e:  # exiting, or /proc unreadable
            self.unsupported["cpu_time_ns"] = f"/proc/{self.pid}/stat: {e}"
        if self.counters is not None:
            now.update(self.counters.read())
        if self.loads is not None:
            now["memory_load_samples"] = self.totals.get("memory_load_samples", 0) + \
                len(self.loads.drain())
        self.last = {k: v - self.totals.get(k, 0) for k, v in now.items()}
        self.totals = now
        return self.last

    def status(self, batches: int) -> dict:
        per_batch = self.last.get("cpu_time_ns", 0) / batches if batches else None
        return {"last_tick": dict(self.last), "totals": dict(self.totals),
                "cpu_ms_per_batch": None if per_batch is None else round(per_batch / 1e6, 4),
                "unsupported": dict(self.unsupported)}

    def close(self) -> None:
        if self.counters is not None:
            self.counters.close()
        if self.loads is not None:
            self.loads.close()
