/* recmg native shim; see recmg_shim.h for the contract of each function. */
#define _GNU_SOURCE
#include "recmg_shim.h"

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <linux/perf_event.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_process_madvise
#define SYS_process_madvise 440
#endif

static long ret_or_errno(long rc)
{
    return rc < 0 ? -(long)errno : rc;
}

long recmg_move_pages(int pid, unsigned long count, const uint64_t *addrs,
                      const int32_t *nodes, int32_t *status, int flags)
{
    /* The kernel takes `void **pages`; uint64_t and void * have the same size on
     * the 64-bit targets recmg supports, checked at compile time. */
    _Static_assert(sizeof(void *) == sizeof(uint64_t), "64-bit only");
    return ret_or_errno(syscall(SYS_move_pages, pid, count, (void **)addrs, nodes,
                                status, flags));
}

long recmg_get_mempolicy(int32_t *mode, uint64_t *nodemask, unsigned long maxnode,
                         uint64_t addr, unsigned long flags)
{
    int m = 0;
    long rc = syscall(SYS_get_mempolicy, &m, nodemask, maxnode, (void *)addr, flags);
    if (rc == 0 && mode)
        *mode = m;
    return ret_or_errno(rc);
}

long recmg_mbind(uint64_t addr, uint64_t len, int mode, const uint64_t *nodemask,
                 unsigned long maxnode, unsigned int flags)
{
    return ret_or_errno(syscall(SYS_mbind, (void *)addr, len, mode, nodemask, maxnode,
                                flags));
}

long recmg_madvise(uint64_t addr, uint64_t len, int advice)
{
    return ret_or_errno(madvise((void *)addr, len, advice));
}

long recmg_pidfd_open(int pid, unsigned int flags)
{
    return ret_or_errno(syscall(SYS_pidfd_open, pid, flags));
}

long recmg_process_madvise(int pidfd, const uint64_t *addrs, const uint64_t *lens,
                           unsigned long n, int advice, unsigned int flags)
{
    /* IOV_MAX (1024) bounds one call; callers batch above that. */
    struct iovec iov[1024];
    if (n > 1024)
        return -E2BIG;
    for (unsigned long i = 0; i < n; i++) {
        iov[i].iov_base = (void *)addrs[i];
        iov[i].iov_len = lens[i];
    }
    return ret_or_errno(syscall(SYS_process_madvise, pidfd, iov, n, advice, flags));
}

long recmg_perf_event_open(const struct recmg_perf_attr *a, int pid, int cpu,
                           int group_fd, unsigned long flags)
{
    struct perf_event_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.size = sizeof(attr);
    attr.type = a->type;
    attr.config = a->config;
    attr.config1 = a->config1;
    attr.sample_period = a->sample_period;
    attr.sample_type = a->sample_type;
    attr.read_format = a->read_format;
    attr.disabled = a->disabled ? 1 : 0;
    attr.exclude_kernel = a->exclude_kernel ? 1 : 0;
    attr.exclude_hv = a->exclude_hv ? 1 : 0;
    attr.inherit = a->inherit ? 1 : 0;
    attr.precise_ip = (unsigned)a->precise_ip & 3u;
    return ret_or_errno(syscall(SYS_perf_event_open, &attr, pid, cpu, group_fd, flags));
}

long recmg_perf_read(int fd, uint64_t *buf, size_t nbytes)
{
    return ret_or_errno(read(fd, buf, nbytes));
}

long recmg_perf_ioctl(int fd, int op, unsigned int arg)
{
    static const unsigned long req[] = {PERF_EVENT_IOC_ENABLE, PERF_EVENT_IOC_DISABLE,
                                        PERF_EVENT_IOC_RESET};
    if (op < 0 || op > 2)
        return -EINVAL;
    return ret_or_errno(ioctl(fd, req[op], arg));
}

long recmg_close(int fd)
{
    return ret_or_errno(close(fd));
}

uint64_t recmg_load_acquire_u64(const void *base, size_t offset)
{
    return __atomic_load_n((const uint64_t *)((const char *)base + offset),
                           __ATOMIC_ACQUIRE);
}

void recmg_store_release_u64(void *base, size_t offset, uint64_t value)
{
    __atomic_store_n((uint64_t *)((char *)base + offset), value, __ATOMIC_RELEASE);
}

/* ---------------------------------------------------------------- fault-safe access
 * recmgd maps segments that another (unprivileged) process owns and can truncate at
 * any moment; touching a page past the new end of a MAP_SHARED file raises SIGBUS
 * (mmap(2), "SIGBUS: access to a portion of the buffer that does not correspond to
 * the file").  A SIGBUS handler, installed once, makes a fault inside these calls
 * jump back and return -EFAULT instead of killing the process.  A SIGBUS anywhere
 * else (another thread, or outside a guarded access) gets the disposition that was
 * there before: the handler restores it and the faulting access repeats. */
/* volatile + signal fences: the handler reads it, so the compiler must not drop or
 * move the stores around the guarded access (memcpy never reads it). */
static __thread sigjmp_buf *volatile recmg_fault_jmp;
static struct sigaction recmg_prev_bus;
static pthread_once_t recmg_bus_once = PTHREAD_ONCE_INIT;
static int recmg_bus_error;

static void recmg_bus_handler(int sig, siginfo_t *si, void *uc)
{
    (void)si;
    (void)uc;
    if (recmg_fault_jmp)
        siglongjmp(*recmg_fault_jmp, 1);
    sigaction(sig, &recmg_prev_bus, NULL);
}

static void recmg_bus_install(void)
{
    struct sigaction act;
    memset(&act, 0, sizeof act);
    act.sa_sigaction = recmg_bus_handler;
    act.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&act.sa_mask);
    if (sigaction(SIGBUS, &act, &recmg_prev_bus) != 0)
        recmg_bus_error = errno;
}

/* Run body with SIGBUS turned into "return -EFAULT". */
#define RECMG_GUARDED(body)                                                      \
    do {                                                                         \
        sigjmp_buf jb;                                                           \
        pthread_once(&recmg_bus_once, recmg_bus_install);                        \
        if (recmg_bus_error)                                                     \
            return -recmg_bus_error;                                             \
        if (sigsetjmp(jb, 1)) {                                                  \
            recmg_fault_jmp = NULL;                                              \
            return -EFAULT;                                                      \
        }                                                                        \
        recmg_fault_jmp = &jb;                                                   \
        __atomic_signal_fence(__ATOMIC_SEQ_CST);                                 \
        body;                                                                    \
        __atomic_signal_fence(__ATOMIC_SEQ_CST);                                 \
        recmg_fault_jmp = NULL;                                                  \
    } while (0)

long recmg_safe_copy(void *dst, const void *src, size_t n)
{
    RECMG_GUARDED(memcpy(dst, src, n));
    return 0;
}

uint64_t recmg_keys_valid(const uint64_t *keys, uint64_t n, const uint64_t *upper,
                          uint64_t ntables, uint8_t *ok)
{
    uint64_t bad = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t t = keys[i] >> 40;
        uint8_t v = keys[i] < upper[t < ntables ? t : ntables];
        ok[i] = v;
        bad += !v;
    }
    return bad;
}

long recmg_safe_load_acquire_u64(const void *base, size_t offset, uint64_t *out)
{
    RECMG_GUARDED(*out = __atomic_load_n((const uint64_t *)((const char *)base + offset),
                                         __ATOMIC_ACQUIRE));
    return 0;
}

long recmg_safe_store_release_u64(void *base, size_t offset, uint64_t value)
{
    RECMG_GUARDED(__atomic_store_n((uint64_t *)((char *)base + offset), value,
                                   __ATOMIC_RELEASE));
    return 0;
}
