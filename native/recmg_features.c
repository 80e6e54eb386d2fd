/* recmg online features; see recmg_features.h for the contract. */
#include "recmg_features.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NIL UINT32_MAX

typedef struct {
    uint64_t key, last;  /* last: clock of the previous access */
    float lgap[3];       /* log2(1 + the previous gaps), newest first (0: none) */
    uint32_t count;
    float decayed[3];    /* counts decayed to `last` */
    uint32_t prev, next; /* recency list: towards older / newer */
} kstate;

struct recmg_feat {
    kstate *s;
    uint32_t *slot;
    uint64_t cap, len, mask, clock;
    uint32_t oldest, newest;
};

static const float HALF_LIFE[3] = {1024.0f, 16384.0f, 262144.0f};

static inline uint64_t fmix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

recmg_feat *recmg_feat_new(uint64_t max_keys)
{
    if (max_keys < 1 || max_keys >= NIL)
        return NULL;
    recmg_feat *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    uint64_t size = 16;
    while (size < 2 * max_keys)
        size <<= 1;
    f->cap = max_keys, f->mask = size - 1;
    f->s = malloc(max_keys * sizeof(kstate));
    f->slot = malloc(size * sizeof(uint32_t));
    if (!f->s || !f->slot) {
        recmg_feat_free(f);
        return NULL;
    }
    memset(f->slot, 0xff, size * sizeof(uint32_t));
    f->oldest = f->newest = NIL;
    return f;
}

void recmg_feat_free(recmg_feat *f)
{
    if (!f)
        return;
    free(f->s);
    free(f->slot);
    free(f);
}

uint64_t recmg_feat_clock(const recmg_feat *f) { return f->clock; }
uint64_t recmg_feat_len(const recmg_feat *f) { return f->len; }

static uint64_t find(const recmg_feat *f, uint64_t key)
{
    uint64_t h = fmix(key) & f->mask;
    while (f->slot[h] != NIL && f->s[f->slot[h]].key != key)
        h = (h + 1) & f->mask;
    return h;
}

static void unlink_s(recmg_feat *f, uint32_t i)
{
    kstate *x = &f->s[i];
    if (x->prev != NIL)
        f->s[x->prev].next = x->next;
    else
        f->oldest = x->next;
    if (x->next != NIL)
        f->s[x->next].prev = x->prev;
    else
        f->newest = x->prev;
}

static void push_newest(recmg_feat *f, uint32_t i)
{
    f->s[i].prev = f->newest;
    f->s[i].next = NIL;
    if (f->newest != NIL)
        f->s[f->newest].next = i;
    else
        f->oldest = i;
    f->newest = i;
}

/* remove the key at hash slot h (backward-shift deletion) */
static void delete_slot(recmg_feat *f, uint64_t h)
{
    uint64_t j = h;
    f->slot[h] = NIL;
    for (;;) {
        j = (j + 1) & f->mask;
        uint32_t i = f->slot[j];
        if (i == NIL)
            return;
        uint64_t home = fmix(f->s[i].key) & f->mask;
        int stays = h <= j ? (home > h && home <= j) : (home > h || home <= j);
        if (!stays) {
            f->slot[h] = i;
            f->slot[j] = NIL;
            h = j;
        }
    }
}

static inline float lg(float x) { return log2f(1.0f + x); }

void recmg_feat_observe(recmg_feat *f, const uint64_t *keys, uint64_t n, float *out)
{
    for (uint64_t a = 0; a < n; a++, out += RECMG_FEAT_FEATURES) {
        uint64_t key = keys[a], now = f->clock++;
        out[RECMG_FEAT_KEY_FEATURES] = (float)(key >> 40);
        uint64_t h = find(f, key);
        uint32_t i = f->slot[h];
        if (i == NIL) { /* first access (or forgotten): a fresh state */
            if (f->len == f->cap) {
                uint32_t o = f->oldest;
                unlink_s(f, o);
                delete_slot(f, find(f, f->s[o].key));
                f->len--;
                i = o;
                h = find(f, key);
            } else {
                i = (uint32_t)f->len;
            }
            f->len++;
            kstate *x = &f->s[i];
            memset(x, 0, sizeof *x);
            x->key = key;
            x->last = now;
            x->count = 1;
            for (int d = 0; d < 3; d++)
                x->decayed[d] = 1.0f;
            f->slot[h] = i;
            push_newest(f, i);
            memset(out, 0, RECMG_FEAT_KEY_FEATURES * sizeof(float));
            continue;
        }
        kstate *x = &f->s[i];
        uint64_t gap = now - x->last;
        float lgap = lg((float)gap);
        out[0] = lgap;
        for (int g = 0; g < 3; g++)
            out[1 + g] = x->lgap[g];
        for (int d = 0; d < 3; d++) {
            float c = x->decayed[d] * exp2f(-(float)gap / HALF_LIFE[d]);
            out[4 + d] = lg(c);
            x->decayed[d] = c + 1.0f;
        }
        out[7] = lg((float)x->count);
        x->lgap[2] = x->lgap[1], x->lgap[1] = x->lgap[0];
        x->lgap[0] = lgap;
        x->count += x->count < UINT32_MAX;
        x->last = now;
        unlink_s(f, i);
        push_newest(f, i);
    }
}
