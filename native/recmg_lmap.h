/* A bounded map in C for recmg's native cores (recmg_prefetch.c, recmg_features.c):
 * two-word keys -> a uint64 value, at most `cap` keys, the least recently stored key
 * out first (as an OrderedDict with move_to_end on every store and popitem(last=False)
 * beyond its capacity).  Entries are allocated once; the hash is linear probing with
 * backward-shift deletion; an entry's index in `e` is stable while its key is held,
 * so a caller can keep per-key state in a parallel array (lmap_slot).
 * Header-only (static inline functions). */
#ifndef RECMG_LMAP_H
#define RECMG_LMAP_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NIL UINT32_MAX

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
    uint32_t prev, next; /* towards older / newer; free list through next */
    uint32_t at;         /* its hash slot (kept when slots shift), so eviction needs no probe */
} entry;

typedef struct {
    entry *e;
    uint32_t *slot;
    uint64_t cap, len, mask;
    uint32_t oldest, newest, free_head;
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
    m->oldest = m->newest = NIL;
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

static inline uint64_t lmap_pos(const lmap *m, uint64_t k0, uint64_t k1)
{
    uint64_t h = mix2(k0, k1) & m->mask;
    while (m->slot[h] != NIL) {
        const entry *x = &m->e[m->slot[h]];
        if (x->k0 == k0 && x->k1 == k1)
            return h;
        h = (h + 1) & m->mask;
    }
    return h; /* the empty slot where it would go */
}

static inline int lmap_get(const lmap *m, uint64_t k0, uint64_t k1, uint64_t *val)
{
    uint32_t i = m->slot[lmap_pos(m, k0, k1)];
    if (i == NIL)
        return 0;
    *val = m->e[i].val;
    return 1;
}

static inline void unlink_entry(lmap *m, uint32_t i)
{
    entry *x = &m->e[i];
    if (x->prev != NIL)
        m->e[x->prev].next = x->next;
    else
        m->oldest = x->next;
    if (x->next != NIL)
        m->e[x->next].prev = x->prev;
    else
        m->newest = x->prev;
}

static inline void link_newest(lmap *m, uint32_t i)
{
    entry *x = &m->e[i];
    x->prev = m->newest;
    x->next = NIL;
    if (m->newest != NIL)
        m->e[m->newest].next = i;
    else
        m->oldest = i;
    m->newest = i;
}

static inline void slot_delete(lmap *m, uint64_t h)
{
    /* backward-shift deletion keeps every probe run unbroken */
    uint64_t j = h;
    m->slot[h] = NIL;
    for (;;) {
        j = (j + 1) & m->mask;
        uint32_t i = m->slot[j];
        if (i == NIL)
            return;
        uint64_t home = mix2(m->e[i].k0, m->e[i].k1) & m->mask;
        /* move it back unless its home lies cyclically in (h, j] */
        int stays = h <= j ? (home > h && home <= j) : (home > h || home <= j);
        if (!stays) {
            m->slot[h] = i;
            m->e[i].at = (uint32_t)h;
            m->slot[j] = NIL;
            h = j;
        }
    }
}

static inline void remove_entry(lmap *m, uint32_t i)
{
    slot_delete(m, m->e[i].at);
    unlink_entry(m, i);
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
        unlink_entry(m, i);
        link_newest(m, i);
        return 1;
    }
    int evicted = 0;
    if (m->len == m->cap) {
        uint32_t o = m->oldest;
        ev[0] = m->e[o].k0, ev[1] = m->e[o].k1, ev[2] = m->e[o].val;
        remove_entry(m, o);
        evicted = 2;
        h = lmap_pos(m, k0, k1); /* the deletion may have shifted the run */
    }
    i = m->free_head;
    m->free_head = m->e[i].next;
    m->e[i].k0 = k0, m->e[i].k1 = k1, m->e[i].val = val, m->e[i].at = (uint32_t)h;
    m->slot[h] = i;
    link_newest(m, i);
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
        unlink_entry(m, i);
        link_newest(m, i);
        return i;
    }
    lmap_put(m, k0, k1, 0, ev);
    return m->newest;
}

#endif
