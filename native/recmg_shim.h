/*
 * recmg native shim: thin Linux syscall wrappers for the recmg daemon.
 *
 * Every function returns a non-negative result on success and -errno on failure
 * (never -1 with errno set), so the Python side needs no errno thread-local and
 * the result is unambiguous.  No libnuma: syscalls are made with syscall(2).
 * No callbacks (systemd's MemoryDenyWriteExecute=yes forbids cffi callbacks).
 */
#ifndef RECMG_SHIM_H
#define RECMG_SHIM_H

#include <stddef.h>
#include <stdint.h>

/* move_pages(2).  nodes == NULL queries the node of each page into status.
 * Returns 0, the number of pages not migrated (> 0), or -errno. */
long recmg_move_pages(int pid, unsigned long count, const uint64_t *addrs,
                      const int32_t *nodes, int32_t *status, int flags);

/* get_mempolicy(2): mode and nodemask of the calling thread or of addr. */
long recmg_get_mempolicy(int32_t *mode, uint64_t *nodemask, unsigned long maxnode,
                         uint64_t addr, unsigned long flags);

/* mbind(2) on [addr, addr+len) of the calling process. */
long recmg_mbind(uint64_t addr, uint64_t len, int mode, const uint64_t *nodemask,
                 unsigned long maxnode, unsigned int flags);

/* madvise(2) on the calling process. */
long recmg_madvise(uint64_t addr, uint64_t len, int advice);

/* pidfd_open(2) (Linux 5.3). Returns the fd or -errno. */
long recmg_pidfd_open(int pid, unsigned int flags);

/* process_madvise(2) (Linux 5.10): n ranges given as parallel arrays.
 * Returns bytes advised or -errno. */
long recmg_process_madvise(int pidfd, const uint64_t *addrs, const uint64_t *lens,
                           unsigned long n, int advice, unsigned int flags);

/* The perf_event_attr fields recmg sets; the rest stay zero. */
struct recmg_perf_attr {
    uint32_t type;
    uint64_t config;
    uint64_t config1;
    uint64_t sample_period;
    uint64_t sample_type;
    uint64_t read_format;
    int disabled;
    int exclude_kernel;
    int exclude_hv;
    int inherit;
    int precise_ip;
};

/* perf_event_open(2). Returns the fd or -errno. */
long recmg_perf_event_open(const struct recmg_perf_attr *attr, int pid, int cpu,
                           int group_fd, unsigned long flags);

/* read(2) of a perf fd into buf (up to nbytes). Returns bytes read or -errno. */
long recmg_perf_read(int fd, uint64_t *buf, size_t nbytes);

/* PERF_EVENT_IOC_{ENABLE,DISABLE,RESET}; op is 0, 1 or 2. */
#define RECMG_PERF_ENABLE 0
#define RECMG_PERF_DISABLE 1
#define RECMG_PERF_RESET 2
long recmg_perf_ioctl(int fd, int op, unsigned int arg);

/* close(2). */
long recmg_close(int fd);

/* 64-bit atomics on shared memory (the capture ring's cursors).
 * offset must be 8-byte aligned; acquire/release order as in C11. */
uint64_t recmg_load_acquire_u64(const void *base, size_t offset);
void recmg_store_release_u64(void *base, size_t offset, uint64_t value);

/* The same, and memcpy, on memory another process can truncate under us: a SIGBUS
 * during the access returns -EFAULT instead of killing the process.  0 on success. */
long recmg_safe_copy(void *dst, const void *src, size_t n);
long recmg_safe_load_acquire_u64(const void *base, size_t offset, uint64_t *out);
long recmg_safe_store_release_u64(void *base, size_t offset, uint64_t value);

/* Which keys (table << 40 | row, copied out of a ring) name a registered row: ok[i] =
 * keys[i] < upper[min(keys[i] >> 40, ntables)], where upper[t] = (t << 40) + rows of
 * table t and upper[ntables] = 0 (a key of an unknown table is never valid).  One pass;
 * returns how many are not. */
uint64_t recmg_keys_valid(const uint64_t *keys, uint64_t n, const uint64_t *upper,
                          uint64_t ntables, uint8_t *ok);

#endif
