/* recmg prefetcher cores: the per-miss state machines of the temporal prefetchers
 * (STMS, Domino, ISB) and the per-region footprint tables of SMS and Bingo, in C.
 *
 * Every structure is bounded: a map of at most `entries` keys that forgets its least
 * recently updated key (an LRU by update: lookups do not refresh), and rings of fixed
 * size.  Nothing is rebuilt periodically.  Candidates are written in order; the
 * caller (recmg.engine.policy.prefetch) drops invalid and duplicate keys. */
#ifndef RECMG_PREFETCH_H
#define RECMG_PREFETCH_H

#include <stdint.h>

#define RECMG_PF_STMS 1
#define RECMG_PF_DOMINO 2
#define RECMG_PF_ISB 3
#define RECMG_PF_SMS 4
#define RECMG_PF_BINGO 5

typedef struct recmg_pf recmg_pf;

/* A prefetcher of `kind` with `history` entries per structure (temporal: history
 * ring, index, pair map, structural map; SMS/Bingo: the pattern table), `degree`
 * candidates per miss, and `n_tables` tables (ISB's per-table address counters).
 * NULL with *err = -EINVAL for a bad kind or history, -ENOMEM when out of memory;
 * else *err = 0. */
recmg_pf *recmg_pf_new(int kind, uint64_t history, uint32_t degree, uint64_t n_tables,
                       int *err);
void recmg_pf_free(recmg_pf *p);

/* Temporal kinds: observe misses in order; candidates (at most cap, the capacity of
 * out) into out.  Every miss is observed even once out is full.  Returns how many
 * were written. */
uint64_t recmg_pf_misses(recmg_pf *p, const uint64_t *misses, uint64_t n, uint64_t *out,
                         uint64_t cap);

/* SMS and Bingo: one window's regions, in the caller's order: region i of table
 * table[i] was first touched at row trigger[i]; missed[i] says whether that first
 * access was an on-demand miss; bits[i] is its footprint (bit b = row b of the
 * 64-row region was read).  A missed region whose trigger has a learned footprint
 * emits that footprint's rows (as table << 40 | row, at most 64 per region, into out);
 * then the region's footprint is learned (every region, even once out is full).  At
 * most cap keys are written; returns how many were. */
uint64_t recmg_pf_regions(recmg_pf *p, const uint64_t *table, const uint64_t *trigger,
                          const uint8_t *missed, const uint64_t *bits, uint64_t n,
                          uint64_t *out, uint64_t cap);

/* Best-Offset's round: scores[j] = how many misses X = (t, r) have r - offsets[j] a
 * row of table t (r - d in [0, rows[t])) whose key is among recent[0..m).  0, or
 * -ENOMEM when out of memory. */
int recmg_bo_scores(const uint64_t *misses, uint64_t n, const uint64_t *recent, uint64_t m,
                    const int64_t *offsets, uint64_t k, const uint64_t *rows,
                    uint64_t n_tables, uint64_t *scores);

/* Bytes of state this prefetcher holds (allocated at creation: it never grows). */
uint64_t recmg_pf_bytes(const recmg_pf *p);

#endif
