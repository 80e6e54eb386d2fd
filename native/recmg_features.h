/* recmg online features: per-key state over an access stream, for the learned
 * caching model (recmg.engine.models.features).  The same code computes the features for
 * training (over a recorded trace) and for serving (over the live stream), so the
 * two agree bit for bit.
 *
 * For access i of key k the features describe k's past only, before access i (single
 * precision: log2f, exp2f):
 *   0      log2(1 + accesses since k's previous access), 0 for a first access
 *   1..3   log2(1 + the three previous inter-arrival gaps of k), 0 where missing
 *   4..6   k's access count decayed with half-lives of 2^10, 2^14 and 2^18 accesses,
 *          as log2(1 + count)
 *   7      log2(1 + k's total accesses seen)
 *   8      k's table (key >> 40)  State per key is bounded:
 * at most `max_keys` keys; a new key beyond that replaces the least recently accessed
 * one, whose history is forgotten (its next access looks like a first one). */
#ifndef RECMG_FEATURES_H
#define RECMG_FEATURES_H

#include <stdint.h>

/* features from the key's state, and all of them (the state's, then the table) */
#define RECMG_FEAT_KEY_FEATURES 8
#define RECMG_FEAT_FEATURES 9

typedef struct recmg_feat recmg_feat;

/* NULL with *err = -EINVAL for max_keys outside 1..2^32-2, -ENOMEM when out of
 * memory; else *err = 0. */
recmg_feat *recmg_feat_new(uint64_t max_keys, int *err);
/* Bytes of state it may hold (its bound, fixed at creation; memory is touched as keys
 * come). */
uint64_t recmg_feat_bytes(const recmg_feat *f);
void recmg_feat_free(recmg_feat *f);

/* Features of keys[0..n) in order into out (n x RECMG_FEAT_FEATURES floats, row
 * major), updating the state after each access. */
void recmg_feat_observe(recmg_feat *f, const uint64_t *keys, uint64_t n, float *out);

/* Counted observation: n units, unit i read counts[i] times in a row (a count of 0
 * is taken as 1; recmgd passes each batch's distinct units), the clock advancing by
 * each count.  One row per unit, describing it after these reads: 0 the gap since
 * its previous appearance's last read (0 if none), 1..3 the gaps before that, 4..6
 * its decayed counts including these reads, 7 its total count including them, 8 its
 * table.  An appearance's reads count as one event at its first read's clock for
 * the gaps; they add to the counts, which then decay from its last read.  Models trained on these rows (card: observe "counted")
 * are served with them, never with recmg_feat_observe's. */
void recmg_feat_observe_counted(recmg_feat *f, const uint64_t *keys, const uint32_t *counts,
                                uint64_t n, float *out);

/* The features keys[0..n) would have if each were accessed now, without changing
 * the state (the learned prefetcher's candidates). */
void recmg_feat_peek(const recmg_feat *f, const uint64_t *keys, uint64_t n, float *out);
/* Accesses observed so far, and keys held. */
uint64_t recmg_feat_clock(const recmg_feat *f);
uint64_t recmg_feat_len(const recmg_feat *f);

#endif
