/* recmg prefetcher cores; see recmg_prefetch.h for the contract. */
#include "recmg_prefetch.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "recmg_keys.h"
#include "recmg_lmap.h"

#define SHORT_TAG (1ULL << 62) /* SMS/Bingo short event key: (tag | table, offset) */
#define LONG_TAG (2ULL << 62)  /* Bingo long event key: (tag | table, row) */
#define REGION_ROWS 64

/* ---- the prefetchers ---- */
struct recmg_pf {
    int kind;
    uint32_t degree;
    uint64_t cap;
    uint64_t *hist; /* temporal: ring of misses, absolute position p at p % cap */
    uint64_t end;   /* absolute position after the newest */
    lmap index;     /* STMS/Domino: miss -> its last position; SMS/Bingo: pattern table */
    lmap pairs;     /* Domino: (previous miss, miss) -> position */
    lmap sp;        /* ISB: structural address -> key (index: key -> structural address) */
    uint64_t *next_saddr, n_tables; /* ISB: next free structural address per table */
    uint64_t prev;
    int has_prev;
};

void recmg_pf_free(recmg_pf *p)
{
    if (!p)
        return;
    free(p->hist);
    free(p->next_saddr);
    lmap_free(&p->index);
    lmap_free(&p->pairs);
    lmap_free(&p->sp);
    free(p);
}

recmg_pf *recmg_pf_new(int kind, uint64_t history, uint32_t degree, uint64_t n_tables,
                       int *err)
{
    *err = -EINVAL;
    if (kind < RECMG_PF_STMS || kind > RECMG_PF_BINGO || history < 1 || history >= NIL)
        return NULL;
    *err = -ENOMEM;
    recmg_pf *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->kind = kind, p->degree = degree, p->cap = history, p->n_tables = n_tables;
    int bad = lmap_init(&p->index, history);
    if (kind == RECMG_PF_STMS || kind == RECMG_PF_DOMINO)
        bad |= !(p->hist = malloc(history * sizeof(uint64_t)));
    if (kind == RECMG_PF_DOMINO)
        bad |= lmap_init(&p->pairs, history);
    if (kind == RECMG_PF_ISB) {
        bad |= lmap_init(&p->sp, history + 1);
        bad |= !(p->next_saddr = calloc(n_tables ? n_tables : 1, sizeof(uint64_t)));
    }
    if (bad) {
        recmg_pf_free(p);
        return NULL;
    }
    *err = 0;
    return p;
}

uint64_t recmg_pf_bytes(const recmg_pf *p)
{
    uint64_t b = sizeof *p + lmap_bytes(&p->index);
    if (p->hist)
        b += p->cap * sizeof(uint64_t);
    if (p->kind == RECMG_PF_DOMINO)
        b += lmap_bytes(&p->pairs);
    if (p->kind == RECMG_PF_ISB)
        b += lmap_bytes(&p->sp) + p->n_tables * sizeof(uint64_t);
    return b;
}

/* the misses that followed absolute position pos, still in the ring, at most room */
static uint64_t replay(const recmg_pf *p, uint64_t pos, uint64_t *out, uint64_t room)
{
    uint64_t lo = pos + 1, hi = pos + 1 + (p->degree < room ? p->degree : room), n = 0;
    if (p->end > p->cap && lo < p->end - p->cap)
        lo = p->end - p->cap;
    if (hi > p->end)
        hi = p->end;
    for (uint64_t q = lo; q < hi; q++)
        out[n++] = p->hist[q % p->cap];
    return n;
}

/* Hint the hash slots a later miss will probe: the maps are far larger than the
 * caches, so each probe is a memory round trip unless it was started early. */
#define AHEAD 8
static inline void prefetch_slot(const lmap *m, uint64_t k0, uint64_t k1)
{
    if (m->slot)
        __builtin_prefetch(&m->slot[mix2(k0, k1) & m->mask]);
}

uint64_t recmg_pf_misses(recmg_pf *p, const uint64_t *misses, uint64_t n, uint64_t *out,
                         uint64_t cap)
{
    uint64_t k = 0, pos, ev[3];
    for (uint64_t i = 0; i < n; i++) {
        uint64_t m = misses[i];
        if (i + AHEAD < n) {
            prefetch_slot(&p->index, misses[i + AHEAD], 0);
            if (p->kind == RECMG_PF_DOMINO)
                prefetch_slot(&p->pairs, misses[i + AHEAD - 1], misses[i + AHEAD]);
        }
        if (p->kind == RECMG_PF_STMS || p->kind == RECMG_PF_DOMINO) {
            /* look up and store in one probe per map: the pair (Domino) and the miss
             * both now point at the position this miss is about to take */
            uint64_t here = p->end, pair_pos, ev2[3];
            int by_pair = p->kind == RECMG_PF_DOMINO && p->has_prev &&
                          (lmap_swap(&p->pairs, p->prev, m, here, &pair_pos, ev2) & 1);
            int by_miss = lmap_swap(&p->index, m, 0, here, &pos, ev) & 1;
            if (by_pair)
                k += replay(p, pair_pos, out + k, cap - k);
            else if (by_miss)
                k += replay(p, pos, out + k, cap - k);
            p->hist[here % p->cap] = m;
            p->end++;
            if (p->kind == RECMG_PF_DOMINO) {
                if (!p->has_prev)
                    p->has_prev = 1;
                p->prev = m;
            }
        } else if (p->kind == RECMG_PF_ISB) {
            uint64_t t = RECMG_KEY_TABLE(m), s;
            if (!lmap_get(&p->index, m, 0, &s)) {
                if (t >= p->n_tables)
                    continue; /* not a table of this target: nothing to learn */
                s = t << 32 | p->next_saddr[t]++;
                lmap_put(&p->sp, s, 0, m, ev);
            }
            if (lmap_put(&p->index, m, 0, s, ev))
                lmap_del(&p->sp, ev[2], 0); /* its key forgot its structural address */
            for (uint32_t d = 1; d <= p->degree && k < cap; d++) {
                uint64_t nxt;
                if (lmap_get(&p->sp, s + d, 0, &nxt))
                    out[k++] = nxt;
            }
        }
    }
    return k;
}

uint64_t recmg_pf_regions(recmg_pf *p, const uint64_t *table, const uint64_t *trigger,
                          const uint8_t *missed, const uint64_t *bits, uint64_t n,
                          uint64_t *out, uint64_t cap)
{
    uint64_t k = 0, pattern, ev[3];
    if (p->kind != RECMG_PF_SMS && p->kind != RECMG_PF_BINGO)
        return 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t t = table[i], row = trigger[i];
        if (i + AHEAD < n) {
            prefetch_slot(&p->index, SHORT_TAG | table[i + AHEAD], trigger[i + AHEAD] % REGION_ROWS);
            if (p->kind == RECMG_PF_BINGO)
                prefetch_slot(&p->index, LONG_TAG | table[i + AHEAD], trigger[i + AHEAD]);
        }
        uint64_t off = row % REGION_ROWS, base = row - off;
        if (missed[i]) {
            int found = p->kind == RECMG_PF_BINGO &&
                        lmap_get(&p->index, LONG_TAG | t, row, &pattern);
            if (!found)
                found = lmap_get(&p->index, SHORT_TAG | t, off, &pattern);
            if (found)
                for (uint64_t b = 0; b < REGION_ROWS && k < cap; b++)
                    if (pattern >> b & 1)
                        out[k++] = RECMG_KEY(t, base + b);
        }
        lmap_put(&p->index, SHORT_TAG | t, off, bits[i], ev);
        if (p->kind == RECMG_PF_BINGO)
            lmap_put(&p->index, LONG_TAG | t, row, bits[i], ev);
    }
    return k;
}

int recmg_bo_scores(const uint64_t *misses, uint64_t n, const uint64_t *recent, uint64_t m,
                    const int64_t *offsets, uint64_t k, const uint64_t *rows,
                    uint64_t n_tables, uint64_t *scores)
{
    uint64_t size = 16;
    while (size < 2 * m)
        size <<= 1;
    uint64_t mask = size - 1;
    uint64_t *set = malloc(size * sizeof(uint64_t));
    if (!set)
        return -ENOMEM;
    memset(set, 0xff, size * sizeof(uint64_t)); /* UINT64_MAX: empty (never a key) */
    for (uint64_t i = 0; i < m; i++) {
        uint64_t h = mix2(recent[i], 0) & mask;
        while (set[h] != UINT64_MAX && set[h] != recent[i])
            h = (h + 1) & mask;
        set[h] = recent[i];
    }
    for (uint64_t j = 0; j < k; j++)
        scores[j] = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t t = RECMG_KEY_TABLE(misses[i]), r = RECMG_KEY_ROW(misses[i]);
        if (t >= n_tables)
            continue;
        for (uint64_t j = 0; j < k; j++) {
            int64_t c = (int64_t)r - offsets[j];
            if (c < 0 || (uint64_t)c >= rows[t])
                continue;
            uint64_t key = RECMG_KEY(t, c), h = mix2(key, 0) & mask;
            while (set[h] != UINT64_MAX && set[h] != key)
                h = (h + 1) & mask;
            scores[j] += set[h] == key;
        }
    }
    free(set);
    return 0;
}
