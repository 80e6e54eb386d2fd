/* A bounded map in C for recmg's native cores (recmg_prefetch.c, recmg_features.c):
 * two-word keys -> a uint64 value, at most `cap` keys, the least recently stored key
 * out first (as an OrderedDict with move_to_end on every store and popitem(last=False)
 * beyond its capacity).  Entries are allocated once; the hash is linear probing with
 * backward-shift deletion; an entry's index in `e` is stable while its key is held,
 * so a caller can keep per-key state in a parallel array (lmap_slot).  The hash index
 * and the order list are recmg_index.h's (the cache core's too).
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
    uint64_t cap, len, mask;
    recmg_list order; /* head: the newest, tail: the oldest */
    uint32_t free_head;
} lmap;

static inline int lmap_init(lmap *m, uint64_t cap)
{
    memset(m, 0, sizeof *m);
    if (cap < 1 || cap >= NIL)
        return -1;
    uint64_t size = 16;
    while (size < 2 * cap)
        size <<= 1;
    m->cap = cap;
    m->mask = size - 1;
    m->e = malloc(cap * sizeof(entry));
    m->slot = malloc(size * sizeof(uint32_t));
    if (!m->e || !m->slot)
        return -1;
    memset(m->slot, 0xff, size * sizeof(uint32_t));
    for (uint64_t i = 0; i < cap; i++)
        m->e[i].next = i + 1 < cap ? (uint32_t)(i + 1) : NIL;
    m->free_head = 0;
    RECMG_LIST_INIT(&m->order);
    return 0;
}

static inline void lmap_free(lmap *m)
{
    free(m->e);
    free(m->slot);
}

static inline uint64_t lmap_bytes(const lmap *m)
{
    return m->cap * sizeof(entry) + (m->mask + 1) * sizeof(uint32_t);
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
    if (m->len == m->cap) {
        uint32_t o = m->order.tail;
        ev[0] = m->e[o].k0, ev[1] = m->e[o].k1, ev[2] = m->e[o].val;
        remove_entry(m, o);
        evicted = 2;
        h = lmap_pos(m, k0, k1); /* the deletion may have shifted the run */
    }
    i = m->free_head;
    m->free_head = m->e[i].next;
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
