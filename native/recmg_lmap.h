/* A bounded map in C for recmg's native cores (recmg_prefetch.c, recmg_features.c):
 * two-word keys -> a uint64 value, at most `cap` keys, the least recently stored key
 * out first (as an OrderedDict with move_to_end on every store and popitem(last=False)
 * beyond its capacity).  Entries are reserved once and handed out in index order as
 * keys come; the hash is linear probing with backward-shift deletion; an entry's index
 * in `e` is stable while its key is held, so a caller can keep per-key state in a
 * parallel array (lmap_slot).  The hash index and the order list are recmg_index.h's
 * (the cache core's too).
 * The slot array starts small and doubles as keys come (kept at most half full), up
 * to twice the capacity: a map sized for millions of keys that holds a hundred
 * thousand probes a table of one megabyte, not of 32, and a new map touches no memory
 * for keys it does not hold yet (a learned target's features and prefetcher had
 * touched 190 MiB at attach: docs/results.md, "Memory a learned target touches").
 * Which keys are held, and the order they leave in, do not depend on the table's size.
 * Header-only (static inline functions). */
#ifndef RECMG_LMAP_H
#define RECMG_LMAP_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "recmg_index.h"

#define NIL RECMG_NIL

static inline uint64_t mix2(uint64_t a, uint64_t b)
{
    uint64_t x = a * 0x9e3779b97f4a7c15ULL ^ (b + 0x632be59bd9b4e019ULL);
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

typedef struct {
    uint64_t k0, k1, val;
    uint32_t prev, next; /* towards newer / older (recmg_index.h's list); free list: next */
    uint32_t at;         /* its hash slot (kept when slots shift), so eviction needs no probe */
} entry;

typedef struct {
    entry *e;
    uint32_t *slot;
    uint64_t cap, len, mask, max_mask;
    uint64_t fresh;   /* entries [fresh, cap) were never used */
    recmg_list order; /* head: the newest, tail: the oldest */
    uint32_t free_head; /* entries freed since (NIL: none) */
} lmap;

#define LMAP_MIN_SLOTS 1024

static inline uint32_t *lmap_empty_slots(uint64_t size)
{
    uint32_t *s = malloc(size * sizeof(uint32_t));
    if (s)
        memset(s, 0xff, size * sizeof(uint32_t));
    return s;
}

static inline int lmap_init(lmap *m, uint64_t cap)
{
    memset(m, 0, sizeof *m);
    if (cap < 1 || cap >= NIL)
        return -1;
    uint64_t size = 16;
    while (size < 2 * cap)
        size <<= 1;
    m->cap = cap;
    m->max_mask = size - 1;
    m->mask = (size < LMAP_MIN_SLOTS ? size : LMAP_MIN_SLOTS) - 1;
    m->e = malloc(cap * sizeof(entry)); /* untouched until used: no RSS for the rest */
    m->slot = lmap_empty_slots(m->mask + 1);
    if (!m->e || !m->slot)
        return -1;
    m->free_head = NIL;
    RECMG_LIST_INIT(&m->order);
    return 0;
}

/* Double the slot array, re-placing every held entry; 0 when out of memory (the map
 * keeps its table). */
static inline int lmap_grow(lmap *m)
{
    uint64_t mask = 2 * m->mask + 1;
    uint32_t *s = lmap_empty_slots(mask + 1);
    if (!s)
        return 0;
    for (uint64_t j = 0; j <= m->mask; j++) {
        uint32_t i = m->slot[j];
        if (i == NIL)
            continue;
        uint64_t h = mix2(m->e[i].k0, m->e[i].k1) & mask;
        while (s[h] != NIL)
            h = (h + 1) & mask;
        s[h] = i;
        m->e[i].at = (uint32_t)h;
    }
    free(m->slot);
    m->slot = s;
    m->mask = mask;
    return 1;
}

/* Whether one more key would have to evict the oldest: the map holds its capacity,
 * or its table is half full and cannot grow (out of memory: it then holds fewer). */
static inline int lmap_full(lmap *m)
{
    if (m->len >= m->cap)
        return 1;
    while (2 * (m->len + 1) > m->mask + 1) {
        if (m->mask >= m->max_mask || !lmap_grow(m))
            return m->len + 1 > m->mask; /* keep one slot empty: probes must end */
    }
    return 0;
}

static inline void lmap_free(lmap *m)
{
    free(m->e);
    free(m->slot);
}

static inline uint64_t lmap_bytes(const lmap *m)
{
    return m->cap * sizeof(entry) + (m->max_mask + 1) * sizeof(uint32_t); /* at most */
}

static inline int lmap_eq(const void *ctx, uint32_t i, const void *key)
{
    const entry *x = &((const lmap *)ctx)->e[i];
    const uint64_t *k = key;
    return x->k0 == k[0] && x->k1 == k[1];
}

static inline uint64_t lmap_home(const void *ctx, uint32_t i)
{
    const entry *x = &((const lmap *)ctx)->e[i];
    return mix2(x->k0, x->k1);
}

static inline void lmap_moved(void *ctx, uint32_t i, uint64_t slot)
{
    ((lmap *)ctx)->e[i].at = (uint32_t)slot;
}

static inline uint64_t lmap_pos(const lmap *m, uint64_t k0, uint64_t k1)
{
    const uint64_t key[2] = {k0, k1};
    return recmg_ix_find(m->slot, m->mask, mix2(k0, k1), lmap_eq, m, key);
}

static inline int lmap_get(const lmap *m, uint64_t k0, uint64_t k1, uint64_t *val)
{
    uint32_t i = m->slot[lmap_pos(m, k0, k1)];
    if (i == NIL)
        return 0;
    *val = m->e[i].val;
    return 1;
}

static inline void remove_entry(lmap *m, uint32_t i)
{
    recmg_ix_delete(m->slot, m->mask, m->e[i].at, lmap_home, lmap_moved, m);
    RECMG_LIST_UNLINK(m->e, &m->order, i);
    m->e[i].next = m->free_head;
    m->free_head = i;
    m->len--;
}

static inline int lmap_del(lmap *m, uint64_t k0, uint64_t k1)
{
    uint32_t i = m->slot[lmap_pos(m, k0, k1)];
    if (i == NIL)
        return 0;
    remove_entry(m, i);
    return 1;
}

/* Store key -> val as the newest entry; a new key beyond capacity evicts the oldest,
 * reported in ev (k0, k1, val) with bit 1 of the return.  Bit 0 of the return says
 * the key was present, its former value in *old (a lookup and a store in one probe). */
static inline int lmap_swap(lmap *m, uint64_t k0, uint64_t k1, uint64_t val, uint64_t *old,
                     uint64_t ev[3])
{
    uint64_t h = lmap_pos(m, k0, k1);
    uint32_t i = m->slot[h];
    if (i != NIL) {
        *old = m->e[i].val;
        m->e[i].val = val;
        RECMG_LIST_UNLINK(m->e, &m->order, i);
        RECMG_LIST_PUSH(m->e, &m->order, i);
        return 1;
    }
    int evicted = 0;
    uint64_t mask = m->mask;
    if (lmap_full(m)) {
        uint32_t o = m->order.tail;
        ev[0] = m->e[o].k0, ev[1] = m->e[o].k1, ev[2] = m->e[o].val;
        remove_entry(m, o);
        evicted = 2;
    }
    if (evicted || m->mask != mask) /* the deletion may have shifted the run, or the */
        h = lmap_pos(m, k0, k1);    /* table grown */
    if (m->free_head != NIL) {
        i = m->free_head;
        m->free_head = m->e[i].next;
    } else {
        i = (uint32_t)m->fresh++;
    }
    m->e[i].k0 = k0, m->e[i].k1 = k1, m->e[i].val = val, m->e[i].at = (uint32_t)h;
    m->slot[h] = i;
    RECMG_LIST_PUSH(m->e, &m->order, i);
    m->len++;
    return evicted;
}

static inline int lmap_put(lmap *m, uint64_t k0, uint64_t k1, uint64_t val, uint64_t ev[3])
{
    uint64_t old;
    return lmap_swap(m, k0, k1, val, &old, ev) >> 1;
}

/* The entry index of key (k0, k1), stored as the newest; a key not held is inserted,
 * evicting the oldest when full (its index is reused).  *found says which. */
static inline uint32_t lmap_slot(lmap *m, uint64_t k0, uint64_t k1, int *found)
{
    uint64_t ev[3];
    uint64_t h = lmap_pos(m, k0, k1);
    uint32_t i = m->slot[h];
    *found = i != NIL;
    if (*found) {
        RECMG_LIST_UNLINK(m->e, &m->order, i);
        RECMG_LIST_PUSH(m->e, &m->order, i);
        return i;
    }
    lmap_put(m, k0, k1, 0, ev);
    return m->order.head;
}

#endif
