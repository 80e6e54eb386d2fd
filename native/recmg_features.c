/* recmg online features; see recmg_features.h for the contract. */
#include "recmg_features.h"

#include <math.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "recmg_keys.h"
#include "recmg_lmap.h"

/* per key, beside its entry of the map (the same index); the map keeps the keys and
 * their recency, so the least recently accessed key is the one forgotten */
typedef struct {
    uint64_t last;       /* clock of the previous access */
    float lgap[3];       /* log2(1 + the previous gaps), newest first (0: none) */
    uint32_t count;
    float decayed[3];    /* counts decayed to `last` */
} kstate;

struct recmg_feat {
    lmap keys;
    kstate *s;
    uint64_t clock;
};

static const float HALF_LIFE[3] = {1024.0f, 16384.0f, 262144.0f};

recmg_feat *recmg_feat_new(uint64_t max_keys, int *err)
{
    *err = -EINVAL;
    if (max_keys < 1 || max_keys >= NIL)
        return NULL;
    *err = -ENOMEM;
    recmg_feat *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    if (lmap_init(&f->keys, max_keys) != 0 ||
        !(f->s = malloc(max_keys * sizeof(kstate)))) {
        recmg_feat_free(f);
        return NULL;
    }
    *err = 0;
    return f;
}

void recmg_feat_free(recmg_feat *f)
{
    if (!f)
        return;
    lmap_free(&f->keys);
    free(f->s);
    free(f);
}

uint64_t recmg_feat_clock(const recmg_feat *f) { return f->clock; }
uint64_t recmg_feat_bytes(const recmg_feat *f)
{
    return sizeof *f + lmap_bytes(&f->keys) + f->keys.cap * sizeof(kstate);
}
uint64_t recmg_feat_len(const recmg_feat *f) { return f->keys.len; }

static inline float lg(float x) { return log2f(1.0f + x); }

/* One appearance of key: cnt reads in a row from the clock on.  out: the features
 * of the state before them (after = 0: per access, cnt = 1) or after them (after = 1:
 * counted observation). */
static void appear(recmg_feat *f, uint64_t key, uint32_t cnt, int after, float *out)
{
    uint64_t now = f->clock;
    f->clock += cnt;
    out[RECMG_FEAT_KEY_FEATURES] = (float)RECMG_KEY_TABLE(key);
    int found;
    kstate *x = &f->s[lmap_slot(&f->keys, key, 0, &found)];
    if (!found) { /* first access (or forgotten): a fresh state */
        memset(x, 0, sizeof *x);
        memset(out, 0, RECMG_FEAT_KEY_FEATURES * sizeof(float));
        x->count = cnt;
        for (int d = 0; d < 3; d++) {
            x->decayed[d] = (float)cnt;
            if (after)
                out[4 + d] = lg((float)cnt);
        }
        if (after)
            out[7] = lg((float)cnt);
        x->last = now + cnt - 1;
        return;
    }
    uint64_t gap = now - x->last;
    float lgap = lg((float)gap);
    out[0] = lgap;
    for (int g = 0; g < 3; g++)
        out[1 + g] = x->lgap[g];
    for (int d = 0; d < 3; d++) {
        float c = x->decayed[d] * exp2f(-(float)gap / HALF_LIFE[d]);
        x->decayed[d] = c + (float)cnt;
        out[4 + d] = lg(after ? x->decayed[d] : c);
    }
    uint32_t total = x->count > UINT32_MAX - cnt ? UINT32_MAX : x->count + cnt;
    out[7] = lg((float)(after ? total : x->count));
    x->count = total;
    x->lgap[2] = x->lgap[1], x->lgap[1] = x->lgap[0];
    x->lgap[0] = lgap;
    x->last = now + cnt - 1;
}

void recmg_feat_observe(recmg_feat *f, const uint64_t *keys, uint64_t n, float *out)
{
    for (uint64_t a = 0; a < n; a++, out += RECMG_FEAT_FEATURES)
        appear(f, keys[a], 1, 0, out);
}

void recmg_feat_observe_counted(recmg_feat *f, const uint64_t *keys, const uint32_t *counts,
                                uint64_t n, float *out)
{
    for (uint64_t a = 0; a < n; a++, out += RECMG_FEAT_FEATURES)
        appear(f, keys[a], counts[a] ? counts[a] : 1, 1, out);
}

void recmg_feat_peek(const recmg_feat *f, const uint64_t *keys, uint64_t n, float *out)
{
    for (uint64_t a = 0; a < n; a++, out += RECMG_FEAT_FEATURES) {
        uint64_t key = keys[a];
        out[RECMG_FEAT_KEY_FEATURES] = (float)RECMG_KEY_TABLE(key);
        uint32_t i = f->keys.slot[lmap_pos(&f->keys, key, 0)];
        if (i == NIL) {
            memset(out, 0, RECMG_FEAT_KEY_FEATURES * sizeof(float));
            continue;
        }
        const kstate *x = &f->s[i];
        uint64_t gap = f->clock - x->last;
        out[0] = lg((float)gap);
        for (int g = 0; g < 3; g++)
            out[1 + g] = x->lgap[g];
        for (int d = 0; d < 3; d++)
            out[4 + d] = lg(x->decayed[d] * exp2f(-(float)gap / HALF_LIFE[d]));
        out[7] = lg((float)x->count);
    }
}
