"""The native shim on this (one-node) host: every call, every error path."""

import errno
import mmap
import os

import numpy as np
import pytest

from recmg import native

PAGE = native.PAGE_SIZE


def _mapped(pages: int, touch: bool = True):
    m = mmap.mmap(-1, pages * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    arr = np.frombuffer(m, dtype=np.uint8)
    if touch:
        arr[::PAGE] = 1
    addrs = arr.ctypes.data + np.arange(pages, dtype=np.uint64) * np.uint64(PAGE)
    return m, arr, addrs


def _unmapped_range(pages: int) -> np.ndarray:
    """Addresses that were mapped and then unmapped (nothing else reuses them here)."""
    m, arr, addrs = _mapped(pages)
    del arr
    m.close()
    return addrs


def test_move_to_missing_node_names_call_pid_range_and_node():
    m, arr, addrs = _mapped(4)
    status = np.zeros(4, np.int32)
    with pytest.raises(native.NativeNodeError) as ei:
        native.move_pages(0, addrs, np.full(4, 7, np.int32), status)
    e = ei.value
    assert e.errno == errno.ENODEV and e.node == 7 and e.call == "move_pages"
    msg = str(e)
    assert "move_pages" in msg and "node 7" in msg and "pid 0" in msg
    assert f"{int(addrs[0]):#x}" in msg and "recmgctl check" in msg


def test_unknown_pid_is_process_lookup_error():
    status = np.zeros(1, np.int32)
    with pytest.raises(ProcessLookupError) as ei:
        native.move_pages(2**22 + 12345, np.array([PAGE], np.uint64), None, status)
    assert isinstance(ei.value, native.NativeError)
    assert ei.value.errno == errno.ESRCH and "pid 4206649" in str(ei.value)


def test_unmapped_addresses_give_per_page_faults_not_an_exception():
    addrs = _unmapped_range(8)
    status = np.zeros(8, np.int32)
    native.move_pages(0, addrs, None, status)  # query
    assert (status == -errno.EFAULT).all()
    native.move_pages(0, addrs, np.zeros(8, np.int32), status)  # move to node 0
    assert (status == -errno.EFAULT).all()


def test_untouched_pages_are_not_present_and_touched_ones_on_node_0():
    m, arr, addrs = _mapped(8, touch=False)
    arr[: 4 * PAGE : PAGE] = 1
    status = np.zeros(8, np.int32)
    assert native.move_pages(os.getpid(), addrs, None, status) == 0
    assert status[:4].tolist() == [0] * 4
    assert (status[4:] == -errno.ENOENT).all()


def test_missing_permission_is_explained():
    """An unprivileged user (uid 65534, no capabilities) may not move root's pages."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop to nobody, then try to move our parent's pages
        try:
            os.close(r)
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            try:
                native.move_pages(os.getppid(), np.array([PAGE], np.uint64),
                                  np.zeros(1, np.int32), np.zeros(1, np.int32))
                os.write(w, b"no error")
            except native.NativePermissionError as e:
                os.write(w, f"{e.errno}|{e}".encode())
            except BaseException as e:  # noqa: BLE001 - report anything to the parent
                os.write(w, f"other|{type(e).__name__}: {e}".encode())
        finally:
            os._exit(0)
    os.close(w)
    got = os.read(r, 4096).decode()
    os.waitpid(pid, 0)
    os.close(r)
    code, _, msg = got.partition("|")
    assert code == str(errno.EPERM), got
    assert "CAP_SYS_PTRACE" in msg and "move_pages" in msg


def test_wrong_dtype_or_layout_is_refused_before_the_kernel_sees_it():
    status = np.zeros(2, np.int32)
    with pytest.raises(TypeError, match="uint64"):
        native.move_pages(0, np.array([PAGE, 2 * PAGE], np.int64), None, status)
    with pytest.raises(ValueError, match="same length"):
        native.move_pages(0, np.array([PAGE], np.uint64), None, status)
    with pytest.raises(ValueError, match="contiguous"):
        strided = (np.arange(4, dtype=np.uint64) * np.uint64(PAGE))[::2]
        native.move_pages(0, strided, None, status)


def test_madvise_and_its_error():
    m, arr, addrs = _mapped(4)
    native.madvise(int(addrs[0]), 4 * PAGE, native.MADV_NOHUGEPAGE)
    native.madvise(int(addrs[0]), 4 * PAGE, native.MADV_COLD)
    with pytest.raises(native.NativeError) as ei:
        native.madvise(int(addrs[0]) + 1, PAGE, native.MADV_COLD)
    assert ei.value.errno == errno.EINVAL and "madvise" in str(ei.value)
    assert f"{int(addrs[0]) + 1:#x}" in str(ei.value)


def test_mbind_and_get_mempolicy_round_trip():
    m, arr, addrs = _mapped(4, touch=False)
    native.mbind(int(addrs[0]), 4 * PAGE, native.MPOL_BIND, [0])
    mode, nodes = native.get_mempolicy(int(addrs[0]))
    assert mode == native.MPOL_BIND and nodes == [0]
    arr[0] = 1
    assert native.node_of_address(int(addrs[0])) == 0
    with pytest.raises(native.NativeError) as ei:
        native.mbind(int(addrs[0]), 4 * PAGE, native.MPOL_BIND, [9])
    assert "mbind" in str(ei.value) and "node 9" in str(ei.value)


def test_process_madvise_on_a_live_child(region_child):
    done = native.process_madvise(region_child.pid, np.array([region_child.addr], np.uint64),
                                  np.array([1 << 20], np.uint64), native.MADV_COLD)
    assert done == 1 << 20
    with pytest.raises(native.NativeProcessLookupError, match="pidfd_open"):
        native.process_madvise(2**22 + 12345, np.array([PAGE], np.uint64),
                               np.array([PAGE], np.uint64), native.MADV_COLD)


def test_perf_software_counters_count():
    attr = native.PerfAttr(type=native.lib.PERF_TYPE_SOFTWARE,
                           config=native.lib.PERF_COUNT_SW_TASK_CLOCK)
    fd = native.perf_event_open(attr, 0)
    try:
        native.perf_reset(fd)
        native.perf_enable(fd)
        sum(range(200000))
        native.perf_disable(fd)
        assert native.perf_read(fd)[0] > 0  # nanoseconds of task clock
    finally:
        native.close(fd)


def test_perf_errors_name_the_problem():
    attr = native.PerfAttr(type=native.lib.PERF_TYPE_SOFTWARE,
                           config=native.lib.PERF_COUNT_SW_PAGE_FAULTS)
    with pytest.raises(native.NativeProcessLookupError, match="perf_event_open, pid"):
        native.perf_event_open(attr, 2**22 + 12345)
    bogus = native.PerfAttr(type=native.lib.PERF_TYPE_SOFTWARE, config=10**6)
    with pytest.raises(native.NativeError) as ei:
        native.perf_event_open(bogus, 0)
    assert ei.value.errno in (errno.EINVAL, errno.ENOENT, errno.EOPNOTSUPP)


def test_hardware_counter_opens_or_says_unsupported():
    attr = native.PerfAttr(type=native.lib.PERF_TYPE_HARDWARE,
                           config=native.lib.PERF_COUNT_HW_CACHE_MISSES)
    try:
        fd = native.perf_event_open(attr, 0)
    except native.NativeError as e:  # VMs often have no PMU
        assert e.errno in (errno.ENOENT, errno.EOPNOTSUPP, errno.ENODEV, errno.EACCES)
        assert "perf_event_open" in str(e)
    else:
        native.close(fd)


def test_shared_u64_acquire_release_across_processes():
    m = mmap.mmap(-1, PAGE, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
    words = native.SharedU64(m)
    pid = os.fork()
    if pid == 0:
        words.store_release(8, 0xDEADBEEF)
        words.store_release(0, 1)
        os._exit(0)
    os.waitpid(pid, 0)
    assert words.load_acquire(0) == 1 and words.load_acquire(8) == 0xDEADBEEF
    for bad in (4, PAGE, -8):
        with pytest.raises(ValueError, match="aligned uint64"):
            words.load_acquire(bad)


def test_no_fd_or_memory_leak_over_many_calls():
    m, arr, addrs = _mapped(16)
    status = np.zeros(16, np.int32)
    attr = native.PerfAttr(type=native.lib.PERF_TYPE_SOFTWARE,
                           config=native.lib.PERF_COUNT_SW_PAGE_FAULTS)

    def cycle(n):
        for _ in range(n):
            native.move_pages(0, addrs, None, status)
            native.close(native.perf_event_open(attr, 0))
            try:
                native.pidfd_open(2**22 + 12345)
            except ProcessLookupError:
                pass

    cycle(500)  # warm up allocators
    fds = len(os.listdir("/proc/self/fd"))
    rss = int(open("/proc/self/statm").read().split()[1])
    cycle(10000)
    assert len(os.listdir("/proc/self/fd")) == fds
    assert int(open("/proc/self/statm").read().split()[1]) - rss < 256  # pages


# ------------------------------------------------------------ the decision cores (C)
def test_two_threads_ranking_two_caches_get_each_their_own_order():
    """recmg_cache_scores sorted with its cache in a file-level variable: two threads
    scoring at once (cffi releases the GIL) could rank one cache by the other's state."""
    import threading

    from recmg.engine.policy.cache import Cache

    caches = []
    for seed in (1, 2):
        c = Cache("lfu", 20_000)
        c.access(np.random.default_rng(seed).zipf(1.2, 200_000).astype(np.uint64) % 50_000)
        caches.append(c)
    keys = [c.resident() for c in caches]
    want = [c.scores(k) for c, k in zip(caches, keys)]
    bad = []

    def worker(i):
        for _ in range(40):
            if not np.array_equal(caches[i].scores(keys[i]), want[i]):
                bad.append(i)

    ts = [threading.Thread(target=worker, args=(i,)) for i in (0, 1)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not bad


def test_prefetch_cores_never_write_past_the_capacity_they_are_given():
    from recmg._simcore import ffi, lib

    err = ffi.new("int *")
    p = ffi.gc(lib.recmg_pf_new(lib.RECMG_PF_STMS, 1024, 8, 1, err), lib.recmg_pf_free)
    assert err[0] == 0
    misses = np.tile(np.arange(50, dtype=np.uint64), 4)  # every miss replays 8 followers
    out = np.full(64, 7, np.uint64)
    n = lib.recmg_pf_misses(p, ffi.cast("uint64_t *", ffi.from_buffer(misses)), len(misses),
                            ffi.cast("uint64_t *", ffi.from_buffer(out)), 16)
    assert n == 16 and (out[16:] == 7).all()  # the guard past the capacity is untouched


def test_core_constructors_tell_bad_input_from_out_of_memory():
    from recmg._simcore import ffi, lib
    from recmg.engine.policy.cache import Cache
    from recmg.engine.models.features import OnlineFeatures

    err = ffi.new("int *")
    assert lib.recmg_cache_new(lib.RECMG_LRU, 0, 0, err) == ffi.NULL and err[0] == -errno.EINVAL
    assert lib.recmg_pf_new(99, 16, 1, 1, err) == ffi.NULL and err[0] == -errno.EINVAL
    assert lib.recmg_feat_new(0, err) == ffi.NULL and err[0] == -errno.EINVAL
    with pytest.raises(ValueError, match="capacity"):
        Cache("lru", 1 << 33)
    with pytest.raises(ValueError, match="max_keys"):
        OnlineFeatures(0)


def test_the_c_cores_pack_keys_as_python_does():
    """One definition of the key packing in C (native/recmg_keys.h), the same as
    recmg.trace.format's."""
    from recmg._simcore import ffi, lib
    from recmg.engine.models.features import FEATURE_NAMES, OnlineFeatures
    from recmg.trace import format as tf

    assert lib.RECMG_TABLE_SHIFT == tf.TABLE_SHIFT
    keys = tf.make_keys(5, np.array([0, 7, (1 << 40) - 1]))
    feats = OnlineFeatures(64).observe(keys)
    assert feats[:, FEATURE_NAMES.index("table")].tolist() == [5, 5, 5]
    # SMS replays a learned footprint as keys of the region's table
    err = ffi.new("int *")
    p = ffi.gc(lib.recmg_pf_new(lib.RECMG_PF_SMS, 64, 1, 8, err), lib.recmg_pf_free)
    u64 = lambda a: ffi.cast("uint64_t *", ffi.from_buffer(a))  # noqa: E731
    table, trigger = np.array([3], np.uint64), np.array([130], np.uint64)
    bits, out = np.array([0b101], np.uint64), np.zeros(64, np.uint64)
    for missed in (0, 1):
        m = np.array([missed], np.uint8)
        n = lib.recmg_pf_regions(p, u64(table), u64(trigger), ffi.cast("uint8_t *",
                                 ffi.from_buffer(m)), u64(bits), 1, u64(out), len(out))
    assert out[:n].tolist() == tf.make_keys(3, np.array([128, 130])).tolist()


def test_keys_valid_gives_the_readers_definition_for_every_key():
    """The reader's key check in one C pass: a key is valid iff its table is registered
    and its row below the table's rows; tables past the registered ones (up to the
    largest a 64-bit key can name) never are."""
    rng = np.random.default_rng(4)
    rows = np.array([5, 1, 1 << 39, 300], np.uint64)
    upper = np.concatenate([(np.arange(4, dtype=np.uint64) << np.uint64(40)) + rows,
                            np.zeros(1, np.uint64)])
    t = rng.integers(0, 8, 50_000).astype(np.uint64)
    keys = (t << np.uint64(40)) | rng.integers(0, 1 << 40, 50_000).astype(np.uint64)
    keys[:3] = [np.uint64(2**64 - 1), np.uint64(4 << 40), np.uint64((3 << 40) + 299)]
    want = (t < 4) & ((keys & np.uint64((1 << 40) - 1)) < rows[np.minimum(t, 3)])
    want[:3] = [False, False, True]
    ok, bad = native.keys_valid(keys, upper)
    assert np.array_equal(ok, want) and bad == int((~want).sum())
    assert native.keys_valid(keys[:0], upper)[1] == 0
