/*
 * recmg cache core: the caching policies' per-access state machines, in C so that
 * the simulator and the daemon run millions of accesses per second on one core.
 *
 * A cache holds up to `capacity` vector keys (uint64; UINT64_MAX is reserved).
 * Policies: LRU, LFU with aging (frequencies halve every `aging` accesses), S3-FIFO
 * (Yang et al., SOSP'23: small FIFO 10%, main FIFO, ghost FIFO, 2-bit frequency),
 * Belady MIN (offline: the caller passes each access's next use; a miss whose next
 * use is later than every resident key's is not admitted), and "scored" (the caller
 * passes a priority per access, in the next_use slot: the key keeps it until its next
 * access; the lowest priority is evicted first, and a miss whose priority is not above
 * every resident key's is not admitted: a learned policy's mechanism).
 * State: one node per resident key (32 bytes) plus a hash slot array of twice the
 * capacity (16 bytes each), so at most 64 bytes per resident key.
 */
#ifndef RECMG_SIM_H
#define RECMG_SIM_H

#include <stddef.h>
#include <stdint.h>

#define RECMG_LRU 0
#define RECMG_LFU 1
#define RECMG_S3FIFO 2
#define RECMG_BELADY 3
/* a caller's priority per access; the lowest is evicted first */
#define RECMG_SCORED 4
/* a caller's predicted next-use time per access (LRB-style): sampled eviction of
 * the key expected furthest ahead (recmg_sim.c, expected_use) */
#define RECMG_SAMPLED 5

/* access result codes written by recmg_cache_access_two */
#define RECMG_MISS 0
#define RECMG_HIT 1
#define RECMG_PREFETCH_HIT 2

typedef struct recmg_cache recmg_cache;

/* NULL with *err = -EINVAL for a bad policy or capacity, -ENOMEM when out of memory;
 * else *err = 0. */
recmg_cache *recmg_cache_new(int policy, uint64_t capacity, uint64_t aging, int *err);
void recmg_cache_free(recmg_cache *c);
uint64_t recmg_cache_len(const recmg_cache *c);
uint64_t recmg_cache_capacity(const recmg_cache *c);
/* Bytes of state this cache holds (allocated at creation: it never grows). */
uint64_t recmg_cache_bytes(const recmg_cache *c);

/* Access n keys in order (next_use: Belady only, else NULL).  hit_out may be NULL.
 * Returns the number of hits. */
uint64_t recmg_cache_access(recmg_cache *c, const uint64_t *keys, uint64_t n,
                            const uint64_t *next_use, uint8_t *hit_out);

/* Access n distinct units, unit i counts[i] times in a row (counted observation:
 * a step's accesses regrouped so each unit's are consecutive; the engine orders the
 * units by their last reads).
 * The result is exactly that of recmg_cache_access over the regrouped stream, at
 * O(1) per unit (LFU: one re-heap; and read by read where its aging falls inside
 * a unit's repeats, once per aging period): the repeats of a
 * resident key touch it (S3-FIFO's frequency saturates at 3, so at most 3 touches
 * count; LRU's and the priority kinds' repeats change nothing more; LFU's add to its
 * frequency), and a unit not admitted misses each time.  next_use: Belady and the
 * priority kinds, the unit's priority after its last access.  miss_out[i] (may be
 * NULL): how many of unit i's accesses missed (0, 1, or counts[i] when not admitted).
 * A count of 0 is taken as 1.  Returns the number of misses. */
uint64_t recmg_cache_access_counted(recmg_cache *c, const uint64_t *keys,
                                    const uint32_t *counts, uint64_t n,
                                    const uint64_t *next_use, uint32_t *miss_out);

/* The paper's buffer simulator step: each key is looked up in the cache, then in the
 * prefetch buffer pf (an LRU cache); a key found in neither is an on-demand fetch.
 * A prefetch hit moves the key from pf into the cache.  result_out: RECMG_MISS,
 * RECMG_HIT or RECMG_PREFETCH_HIT per key.  Returns the number of misses. */
uint64_t recmg_cache_access_two(recmg_cache *c, recmg_cache *pf, const uint64_t *keys,
                                uint64_t n, const uint64_t *next_use, uint8_t *result_out);

/* Insert keys without counting an access (prefetch into an LRU buffer). Keys already
 * present are refreshed.  Returns the number newly inserted. */
uint64_t recmg_cache_insert(recmg_cache *c, const uint64_t *keys, uint64_t n,
                            const uint64_t *next_use);

/* Remove keys if present; returns how many were removed. */
uint64_t recmg_cache_remove(recmg_cache *c, const uint64_t *keys, uint64_t n);

/* out[i] = 1 if keys[i] is resident. */
void recmg_cache_contains(const recmg_cache *c, const uint64_t *keys, uint64_t n,
                          uint8_t *out);

/* Copy up to max resident keys into out; returns the count. */
uint64_t recmg_cache_resident(const recmg_cache *c, uint64_t *out, uint64_t max);

/* Each key's value in fast memory (higher = more valuable): its rank in the policy's
 * eviction order if resident (1 = next victim), 0 if not.  0 on success, -ENOMEM if
 * out of memory.  Thread-safe for distinct caches. */
int recmg_cache_scores(const recmg_cache *c, const uint64_t *keys, uint64_t n, double *out);

/* Distinct keys of keys[0..n) in first-occurrence order into out; counts[i] = how
 * often out[i] occurs (counts may be NULL).  Returns the number of distinct keys. */
uint64_t recmg_unique_ordered(const uint64_t *keys, uint64_t n, uint64_t *out,
                              uint32_t *counts);

/* As recmg_unique_ordered, and inv[i] = the index in out of keys[i] (out[inv[i]] ==
 * keys[i]). */
uint64_t recmg_unique_inverse(const uint64_t *keys, uint64_t n, uint64_t *out, uint64_t *inv);

/* out[i] = the position of the next occurrence of keys[i] after i, UINT64_MAX if none
 * (what Belady needs), in one backward pass with a hash of the keys seen: O(n), 24
 * bytes of scratch per key.  Returns the number of distinct keys, UINT64_MAX when out
 * of memory or n >= 2^32 - 1. */
uint64_t recmg_next_use(const uint64_t *keys, uint64_t n, uint64_t *out);

/* Each batch's distinct keys in first-use order (batches at offs[0..nb]) into out,
 * their counts within the batch, and each batch's start in out into out_offs[0..nb].
 * Returns how many were written; UINT64_MAX on bad offsets or out of memory. */
uint64_t recmg_distinct_in_batches(const uint64_t *keys, uint64_t n, const uint64_t *offs,
                                   uint64_t nb, uint64_t *out, uint32_t *counts,
                                   uint64_t *out_offs);

/* The page of each vector key (table << 40 | row) in a layout of n_tables tables (table
 * t at byte base[t], rows of row_bytes[t], its first page first[t] = base[t] >> shift,
 * numbered from offset[t] end to end), in one pass: with offset, out[i] is the global
 * page index offset[t] + p, p = ((base[t] + row * row_bytes[t]) >> shift) - first[t]
 * (the page within its table); with offset NULL, the per-table page key t << 40 | p.
 * Returns 0, or the position + 1 of the first key whose table is not below n_tables
 * (out is then written up to it).  The arithmetic wraps as uint64 (numpy's), never
 * reads outside the arrays. */
uint64_t recmg_pages_of_keys(const uint64_t *keys, uint64_t n, const uint64_t *base,
                             const uint64_t *row_bytes, const uint64_t *first,
                             const int64_t *offset, uint64_t n_tables, unsigned shift,
                             uint64_t *out);

#endif
