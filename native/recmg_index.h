/* The one hash index and the one list of recmg's C cores (recmg_sim.c's cache and
 * ghost, recmg_lmap.h's bounded map): header-only, static inline.
 *
 * Index: open addressing over a power-of-two array of uint32 slots, each holding the
 * index of an entry in the caller's own array (RECMG_NIL: empty), linear probing,
 * and backward-shift deletion, so probe runs stay unbroken without tombstones.  The
 * caller says how to hash an entry and compare it with a key (callbacks the compiler
 * inlines: they are static functions known at each call site), and may be told
 * where a moved entry now sits.
 *
 * List: doubly linked through an array's `prev`/`next` members (any struct with
 * them), head the most recent; a macro per operation so the same code serves every
 * entry type. */
#ifndef RECMG_INDEX_H
#define RECMG_INDEX_H

#include <stdint.h>

#define RECMG_NIL UINT32_MAX

typedef uint64_t (*recmg_home_fn)(const void *ctx, uint32_t idx);
typedef int (*recmg_eq_fn)(const void *ctx, uint32_t idx, const void *key);
typedef void (*recmg_moved_fn)(void *ctx, uint32_t idx, uint64_t slot);

/* The slot holding the entry equal to key, or the empty slot where it would go. */
static inline uint64_t recmg_ix_find(const uint32_t *slots, uint64_t mask, uint64_t hash,
                                     recmg_eq_fn eq, const void *ctx, const void *key)
{
    uint64_t h = hash & mask;
    while (slots[h] != RECMG_NIL && !eq(ctx, slots[h], key))
        h = (h + 1) & mask;
    return h;
}

/* Empty slot h, shifting later entries of its run back (each told to `moved`). */
static inline void recmg_ix_delete(uint32_t *slots, uint64_t mask, uint64_t h,
                                   recmg_home_fn home, recmg_moved_fn moved, void *ctx)
{
    uint64_t j = h;
    slots[h] = RECMG_NIL;
    for (;;) {
        j = (j + 1) & mask;
        uint32_t i = slots[j];
        if (i == RECMG_NIL)
            return;
        uint64_t hm = home(ctx, i) & mask;
        /* it moves back to h unless its home lies cyclically in (h, j] */
        int stays = h <= j ? (hm > h && hm <= j) : (hm > h || hm <= j);
        if (!stays) {
            slots[h] = i;
            if (moved)
                moved(ctx, i, h);
            slots[j] = RECMG_NIL;
            h = j;
        }
    }
}

typedef struct {
    uint32_t head, tail; /* entry indices, RECMG_NIL when empty; head: most recent */
    uint64_t len;
} recmg_list;

#define RECMG_LIST_INIT(l) ((l)->head = (l)->tail = RECMG_NIL, (l)->len = 0)

/* push entry n of array a at the head of list l */
#define RECMG_LIST_PUSH(a, l, n)                                                        \
    do {                                                                                \
        uint32_t n_ = (n);                                                              \
        (a)[n_].prev = RECMG_NIL;                                                       \
        (a)[n_].next = (l)->head;                                                       \
        if ((l)->head != RECMG_NIL)                                                     \
            (a)[(l)->head].prev = n_;                                                   \
        (l)->head = n_;                                                                 \
        if ((l)->tail == RECMG_NIL)                                                     \
            (l)->tail = n_;                                                             \
        (l)->len++;                                                                     \
    } while (0)

/* unlink entry n of array a from list l */
#define RECMG_LIST_UNLINK(a, l, n)                                                      \
    do {                                                                                \
        uint32_t n_ = (n), p_ = (a)[n_].prev, x_ = (a)[n_].next;                        \
        if (p_ != RECMG_NIL)                                                            \
            (a)[p_].next = x_;                                                          \
        else                                                                            \
            (l)->head = x_;                                                             \
        if (x_ != RECMG_NIL)                                                            \
            (a)[x_].prev = p_;                                                          \
        else                                                                            \
            (l)->tail = p_;                                                             \
        (l)->len--;                                                                     \
    } while (0)

#endif
