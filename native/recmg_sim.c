#define _GNU_SOURCE /* qsort_r */
/* recmg cache core; see recmg_sim.h for the contract. */
#include "recmg_sim.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "recmg_index.h"
#include "recmg_keys.h"

#define NONE RECMG_NIL
/* LFU's score: frequency << LFU_TICK_BITS | the tick of the last use (ties: older first) */
#define LFU_TICK_BITS 40
#define LFU_TICK_MASK ((UINT64_C(1) << LFU_TICK_BITS) - 1)
#define EMPTY_KEY UINT64_MAX

typedef struct {
    uint64_t key;
    uint64_t score; /* LFU: freq << 40 | tick; Belady: next use; S3-FIFO: freq */
    union {
        struct {
            uint32_t prev, next; /* LRU and S3-FIFO lists */
        };
        uint64_t last; /* sampled: the clock at the key's last access */
    };
    uint32_t heap_pos;
    uint8_t queue; /* S3-FIFO: 0 small, 1 main */
    uint8_t pad[3];
} node;

typedef recmg_list list; /* recmg_index.h: node indices, head the most recent */

struct recmg_cache {
    int policy;
    uint64_t capacity, len, aging, tick;
    uint64_t rng; /* sampled eviction: xorshift64 state, fixed seed (reproducible) */
    node *nodes;
    uint32_t *free_stack;
    uint64_t n_free;
    uint32_t *slots; /* hash: node index or NONE */
    uint64_t mask;
    uint32_t *heap; /* LFU (min) and Belady (max) */
    list lru;       /* LRU; S3-FIFO main */
    list small;     /* S3-FIFO small */
    uint64_t small_cap;
    /* S3-FIFO ghost: a FIFO ring of keys, and a hash of ring positions (NONE: empty)
     * whose key is the ring's; an entry is current while the hash points at it */
    uint64_t *ghost_keys, ghost_cap, ghost_head, ghost_len;
    uint32_t *gh_pos;
    uint64_t gh_mask;
};

static inline uint64_t mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

static uint64_t pow2_at_least(uint64_t n)
{
    uint64_t p = 16;
    while (p < n)
        p <<= 1;
    return p;
}

/* ---- hash of resident keys (recmg_index.h) ---- */
static inline int node_eq(const void *ctx, uint32_t n, const void *key)
{
    return ((const recmg_cache *)ctx)->nodes[n].key == *(const uint64_t *)key;
}

static inline uint64_t node_home(const void *ctx, uint32_t n)
{
    return mix(((const recmg_cache *)ctx)->nodes[n].key);
}

static inline uint64_t h_find_slot(const recmg_cache *c, uint64_t key)
{
    return recmg_ix_find(c->slots, c->mask, mix(key), node_eq, c, &key);
}

static inline uint32_t h_get(const recmg_cache *c, uint64_t key)
{
    return c->slots[h_find_slot(c, key)];
}

static void h_del(recmg_cache *c, uint64_t key)
{
    uint64_t i = h_find_slot(c, key);
    if (c->slots[i] != NONE)
        recmg_ix_delete(c->slots, c->mask, i, node_home, NULL, c);
}

/* ---- lists (recmg_index.h; head = most recent) ---- */
static inline void l_push_front(recmg_cache *c, list *l, uint32_t n)
{
    RECMG_LIST_PUSH(c->nodes, l, n);
}

static inline void l_unlink(recmg_cache *c, list *l, uint32_t n)
{
    RECMG_LIST_UNLINK(c->nodes, l, n);
}

/* ---- binary heap over node indices; max_heap for Belady ---- */
/* Sampled (LRB-style) eviction order: the key expected to be used furthest ahead
 * goes first (Belady's choice on predictions).  Expected next use: the predicted
 * one, or for a key already idle longer than predicted (a misprediction), now plus
 * its idle time so far (the longer a key has stayed unused, the longer it is
 * expected to stay so), whichever is later. */
static inline uint64_t expected_use(const recmg_cache *c, uint32_t n)
{
    uint64_t s = c->nodes[n].score, idle = c->tick - c->nodes[n].last;
    return s > c->tick + idle ? s : c->tick + idle;
}

static inline int h_before(const recmg_cache *c, uint32_t a, uint32_t b)
{
    if (c->policy == RECMG_SAMPLED)
        return expected_use(c, a) > expected_use(c, b);
    if (c->policy == RECMG_BELADY)
        return c->nodes[a].score > c->nodes[b].score;
    return c->nodes[a].score < c->nodes[b].score;
}

static void heap_set(recmg_cache *c, uint64_t pos, uint32_t n)
{
    c->heap[pos] = n;
    c->nodes[n].heap_pos = (uint32_t)pos;
}

static void sift_up(recmg_cache *c, uint64_t pos)
{
    uint32_t n = c->heap[pos];
    while (pos > 0) {
        uint64_t parent = (pos - 1) / 2;
        if (!h_before(c, n, c->heap[parent]))
            break;
        heap_set(c, pos, c->heap[parent]);
        pos = parent;
    }
    heap_set(c, pos, n);
}

static void sift_down(recmg_cache *c, uint64_t pos)
{
    uint32_t n = c->heap[pos];
    for (;;) {
        uint64_t l = 2 * pos + 1, r = l + 1, best = pos;
        uint32_t bn = n;
        if (l < c->len && h_before(c, c->heap[l], bn)) {
            best = l;
            bn = c->heap[l];
        }
        if (r < c->len && h_before(c, c->heap[r], bn)) {
            best = r;
            bn = c->heap[r];
        }
        if (best == pos)
            break;
        heap_set(c, pos, bn);
        pos = best;
    }
    heap_set(c, pos, n);
}

static void heap_remove(recmg_cache *c, uint32_t n)
{
    uint64_t pos = c->nodes[n].heap_pos;
    uint32_t last = c->heap[c->len - 1];
    c->len--; /* caller keeps len in sync: len counts heap entries for heap policies */
    if (pos < c->len && c->policy == RECMG_SAMPLED) {
        heap_set(c, pos, last); /* a dense array of residents, no order */
    } else if (pos < c->len) {
        heap_set(c, pos, last);
        sift_down(c, pos);
        sift_up(c, c->nodes[last].heap_pos);
    }
    c->len++;
}

/* ---- S3-FIFO ghost: a hash of ring positions (recmg_index.h) ---- */
static inline int ghost_eq(const void *ctx, uint32_t pos, const void *key)
{
    return ((const recmg_cache *)ctx)->ghost_keys[pos] == *(const uint64_t *)key;
}

static inline uint64_t ghost_home(const void *ctx, uint32_t pos)
{
    return mix(((const recmg_cache *)ctx)->ghost_keys[pos]);
}

static inline uint64_t g_find(const recmg_cache *c, uint64_t key)
{
    return recmg_ix_find(c->gh_pos, c->gh_mask, mix(key), ghost_eq, c, &key);
}

static inline void g_del_at(recmg_cache *c, uint64_t i)
{
    recmg_ix_delete(c->gh_pos, c->gh_mask, i, ghost_home, NULL, c);
}

static void ghost_add(recmg_cache *c, uint64_t key)
{
    if (c->ghost_cap == 0)
        return;
    if (c->ghost_len == c->ghost_cap) { /* drop the oldest, if still current */
        uint64_t i = g_find(c, c->ghost_keys[c->ghost_head]);
        if (c->gh_pos[i] == c->ghost_head)
            g_del_at(c, i);
        c->ghost_head = (c->ghost_head + 1) % c->ghost_cap;
        c->ghost_len--;
    }
    uint64_t pos = (c->ghost_head + c->ghost_len) % c->ghost_cap;
    uint64_t i = g_find(c, key);
    if (c->gh_pos[i] != NONE) /* an older copy of the key is still current: this one wins */
        g_del_at(c, i);
    c->ghost_keys[pos] = key;
    c->ghost_len++;
    c->gh_pos[g_find(c, key)] = (uint32_t)pos;
}

static int ghost_take(recmg_cache *c, uint64_t key)
{
    if (c->ghost_cap == 0)
        return 0;
    uint64_t i = g_find(c, key);
    if (c->gh_pos[i] == NONE)
        return 0;
    g_del_at(c, i);
    return 1;
}

/* ---- construction ---- */
recmg_cache *recmg_cache_new(int policy, uint64_t capacity, uint64_t aging, int *err)
{
    *err = -EINVAL;
    if (policy < RECMG_LRU || policy > RECMG_SAMPLED || capacity == 0 ||
        capacity >= (uint64_t)NONE)
        return NULL;
    *err = -ENOMEM;
    recmg_cache *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->policy = policy;
    c->rng = 0x9E3779B97F4A7C15ULL;
    c->capacity = capacity;
    c->aging = aging;
    c->mask = pow2_at_least(2 * capacity) - 1;
    c->nodes = malloc(capacity * sizeof(node));
    c->free_stack = malloc(capacity * sizeof(uint32_t));
    c->slots = malloc((c->mask + 1) * sizeof(uint32_t));
    if (policy == RECMG_LFU || policy == RECMG_BELADY || policy >= RECMG_SCORED)
        c->heap = malloc(capacity * sizeof(uint32_t));
    RECMG_LIST_INIT(&c->lru);
    RECMG_LIST_INIT(&c->small);
    if (policy == RECMG_S3FIFO) {
        c->small_cap = capacity / 10 > 0 ? capacity / 10 : 1;
        c->ghost_cap = capacity - c->small_cap;
        if (c->ghost_cap) {
            c->ghost_keys = malloc(c->ghost_cap * sizeof(uint64_t));
            c->gh_mask = pow2_at_least(2 * c->ghost_cap) - 1;
            c->gh_pos = malloc((c->gh_mask + 1) * sizeof(uint32_t));
        }
    }
    if (!c->nodes || !c->free_stack || !c->slots ||
        ((policy == RECMG_LFU || policy == RECMG_BELADY || policy >= RECMG_SCORED) &&
         !c->heap) ||
        (c->ghost_cap && (!c->ghost_keys || !c->gh_pos))) {
        recmg_cache_free(c);
        return NULL;
    }
    memset(c->slots, 0xff, (c->mask + 1) * sizeof(uint32_t));
    if (c->gh_pos)
        memset(c->gh_pos, 0xff, (c->gh_mask + 1) * sizeof(uint32_t));
    for (uint64_t i = 0; i < capacity; i++)
        c->free_stack[i] = (uint32_t)(capacity - 1 - i);
    c->n_free = capacity;
    *err = 0;
    return c;
}

void recmg_cache_free(recmg_cache *c)
{
    if (!c)
        return;
    free(c->nodes);
    free(c->free_stack);
    free(c->slots);
    free(c->heap);
    free(c->ghost_keys);
    free(c->gh_pos);
    free(c);
}

uint64_t recmg_cache_len(const recmg_cache *c) { return c->len; }
uint64_t recmg_cache_capacity(const recmg_cache *c) { return c->capacity; }

uint64_t recmg_cache_bytes(const recmg_cache *c)
{
    uint64_t b = sizeof *c + c->capacity * (sizeof(node) + sizeof(uint32_t)) +
                 (c->mask + 1) * sizeof(uint32_t);
    if (c->heap)
        b += c->capacity * sizeof(uint32_t);
    if (c->ghost_keys)
        b += c->ghost_cap * sizeof(uint64_t) + (c->gh_mask + 1) * sizeof(uint32_t);
    return b;
}

static uint32_t alloc_node(recmg_cache *c, uint64_t key)
{
    uint32_t n = c->free_stack[--c->n_free];
    memset(&c->nodes[n], 0, sizeof(node));
    c->nodes[n].key = key;
    c->slots[h_find_slot(c, key)] = n;
    return n;
}

static void release_node(recmg_cache *c, uint32_t n)
{
    h_del(c, c->nodes[n].key);
    c->free_stack[c->n_free++] = n;
}

/* ---- eviction ---- */
#define EVICTION_SAMPLES 64 /* LRB's sample size (Song et al., NSDI 2020) */
static void evict_one(recmg_cache *c)
{
    uint32_t v;
    switch (c->policy) {
    case RECMG_LRU:
        v = c->lru.tail;
        l_unlink(c, &c->lru, v);
        break;
    case RECMG_LFU:
    case RECMG_BELADY:
    case RECMG_SCORED:
        v = c->heap[0];
        heap_remove(c, v);
        break;
    case RECMG_SAMPLED: /* LRB: the worst of EVICTION_SAMPLES residents drawn at random */
        v = c->heap[0];
        for (int i = 0; i < EVICTION_SAMPLES; i++) {
            c->rng ^= c->rng << 13;
            c->rng ^= c->rng >> 7;
            c->rng ^= c->rng << 17;
            uint32_t w = c->heap[c->rng % c->len];
            if (h_before(c, w, v))
                v = w;
        }
        heap_remove(c, v);
        break;
    default: /* S3-FIFO */
        for (;;) {
            if (c->small.len >= c->small_cap || c->lru.len == 0) {
                v = c->small.tail;
                l_unlink(c, &c->small, v);
                if (c->nodes[v].score > 0) { /* re-accessed while small: promote */
                    c->nodes[v].score = 0;
                    c->nodes[v].queue = 1;
                    l_push_front(c, &c->lru, v);
                    continue;
                }
                ghost_add(c, c->nodes[v].key);
                break;
            }
            v = c->lru.tail;
            l_unlink(c, &c->lru, v);
            if (c->nodes[v].score > 0) { /* second chance in main */
                c->nodes[v].score--;
                l_push_front(c, &c->lru, v);
                continue;
            }
            break;
        }
    }
    release_node(c, v);
    c->len--;
}

static void age_all(recmg_cache *c)
{
    for (uint64_t i = 0; i < c->len; i++) {
        node *x = &c->nodes[c->heap[i]];
        uint64_t freq = x->score >> LFU_TICK_BITS;
        x->score = ((freq >> 1) << LFU_TICK_BITS) | (x->score & LFU_TICK_MASK);
    }
    for (uint64_t i = c->len / 2 + 1; i-- > 0;)
        if (i < c->len)
            sift_down(c, i);
}

/* LFU: ``hits`` more reads of x now (its count saturates at 2^23 - 1, the bits the
 * score keeps above the tick), then its place in the heap. */
static void lfu_hits(recmg_cache *c, node *x, uint64_t hits)
{
    uint64_t freq = (x->score >> LFU_TICK_BITS) + hits;
    if (freq >= (1ULL << 23))
        freq = (1ULL << 23) - 1;
    x->score = (freq << LFU_TICK_BITS) | (c->tick & LFU_TICK_MASK);
    sift_down(c, x->heap_pos);
}

/* Touch a resident key (hit). */
static void touch(recmg_cache *c, uint32_t n, uint64_t nu)
{
    node *x = &c->nodes[n];
    switch (c->policy) {
    case RECMG_LRU:
        l_unlink(c, &c->lru, n);
        l_push_front(c, &c->lru, n);
        break;
    case RECMG_LFU:
        lfu_hits(c, x, 1);
        break;
    case RECMG_BELADY:
    case RECMG_SCORED:
        x->score = nu;
        sift_up(c, x->heap_pos);
        sift_down(c, x->heap_pos);
        break;
    case RECMG_SAMPLED:
        x->score = nu;
        x->last = c->tick;
        break;
    default:
        if (x->score < 3)
            x->score++;
    }
}

/* Admit a missing key; returns 0 if Belady bypasses it. */
static int admit(recmg_cache *c, uint64_t key, uint64_t nu)
{
    if (c->policy == RECMG_BELADY && c->len == c->capacity &&
        nu >= c->nodes[c->heap[0]].score)
        return 0; /* used later than everything resident: MIN does not keep it */
    if (c->policy == RECMG_SCORED && c->len == c->capacity &&
        nu <= c->nodes[c->heap[0]].score)
        return 0; /* worth no more than the next victim: not admitted */
    int from_ghost = c->policy == RECMG_S3FIFO && ghost_take(c, key);
    if (c->len == c->capacity)
        evict_one(c);
    uint32_t n = alloc_node(c, key);
    c->len++;
    switch (c->policy) {
    case RECMG_LRU:
        l_push_front(c, &c->lru, n);
        break;
    case RECMG_LFU:
        c->nodes[n].score = (1ULL << LFU_TICK_BITS) | (c->tick & LFU_TICK_MASK);
        heap_set(c, c->len - 1, n);
        sift_up(c, c->len - 1);
        break;
    case RECMG_BELADY:
    case RECMG_SCORED:
        c->nodes[n].score = nu;
        heap_set(c, c->len - 1, n);
        sift_up(c, c->len - 1);
        break;
    case RECMG_SAMPLED:
        c->nodes[n].score = nu;
        c->nodes[n].last = c->tick;
        heap_set(c, c->len - 1, n);
        break;
    default:
        c->nodes[n].queue = from_ghost ? 1 : 0;
        l_push_front(c, from_ghost ? &c->lru : &c->small, n);
    }
    return 1;
}

static inline int access_one(recmg_cache *c, uint64_t key, uint64_t nu)
{
    c->tick++;
    if (c->policy == RECMG_LFU && c->aging && c->tick % c->aging == 0)
        age_all(c);
    uint32_t n = h_get(c, key);
    if (n != NONE) {
        touch(c, n, nu);
        return 1;
    }
    admit(c, key, nu);
    return 0;
}

uint64_t recmg_cache_access(recmg_cache *c, const uint64_t *keys, uint64_t n,
                            const uint64_t *next_use, uint8_t *hit_out)
{
    uint64_t hits = 0;
    for (uint64_t i = 0; i < n; i++) {
        int h = access_one(c, keys[i], next_use ? next_use[i] : 0);
        hits += (uint64_t)h;
        if (hit_out)
            hit_out[i] = (uint8_t)h;
    }
    return hits;
}

uint64_t recmg_cache_access_counted(recmg_cache *c, const uint64_t *keys,
                                    const uint32_t *counts, uint64_t n,
                                    const uint64_t *next_use, uint32_t *miss_out)
{
    uint64_t misses = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t key = keys[i], nu = next_use ? next_use[i] : 0;
        uint32_t cnt = counts[i] ? counts[i] : 1, missed = 0;
        if (!access_one(c, key, nu))
            missed = 1;
        uint32_t x = cnt > 1 ? h_get(c, key) : NONE;
        if (cnt > 1 && x == NONE) {
            /* not admitted (Belady, scored: the only kinds that refuse): each repeat
             * meets the same heap and is refused the same way, changing nothing but
             * the clock */
            c->tick += cnt - 1;
            missed = cnt;
        } else if (c->policy == RECMG_LFU && c->aging &&
                   c->tick / c->aging != (c->tick + cnt - 1) / c->aging) {
            for (uint32_t r = 1; r < cnt; r++) /* aging falls within the repeats */
                access_one(c, key, nu);
        } else if (cnt > 1) {
            c->tick += cnt - 1;
            switch (c->policy) {
            case RECMG_LFU:
                lfu_hits(c, &c->nodes[x], cnt - 1);
                break;
            case RECMG_S3FIFO:
                for (uint32_t r = 1; r < cnt && c->nodes[x].score < 3; r++)
                    c->nodes[x].score++;
                break;
            case RECMG_SAMPLED:
                c->nodes[x].last = c->tick;
                break;
            default: /* LRU: already the most recent; Belady, scored: same priority */
                break;
            }
        }
        misses += missed;
        if (miss_out)
            miss_out[i] = missed;
    }
    return misses;
}

uint64_t recmg_cache_access_two(recmg_cache *c, recmg_cache *pf, const uint64_t *keys,
                                uint64_t n, const uint64_t *next_use, uint8_t *result_out)
{
    uint64_t misses = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t key = keys[i], nu = next_use ? next_use[i] : 0;
        uint8_t r;
        if (access_one(c, key, nu)) {
            r = RECMG_HIT;
        } else {
            uint32_t p = pf ? h_get(pf, key) : NONE;
            if (p != NONE) {
                l_unlink(pf, &pf->lru, p);
                release_node(pf, p);
                pf->len--;
                r = RECMG_PREFETCH_HIT;
            } else {
                r = RECMG_MISS;
                misses++;
            }
        }
        if (result_out)
            result_out[i] = r;
    }
    return misses;
}

uint64_t recmg_cache_insert(recmg_cache *c, const uint64_t *keys, uint64_t n,
                            const uint64_t *next_use)
{
    uint64_t added = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t nu = next_use ? next_use[i] : 0;
        uint32_t x = h_get(c, keys[i]);
        if (x != NONE) {
            touch(c, x, nu);
            continue;
        }
        added += (uint64_t)admit(c, keys[i], nu);
    }
    return added;
}

uint64_t recmg_cache_remove(recmg_cache *c, const uint64_t *keys, uint64_t n)
{
    uint64_t removed = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint32_t x = h_get(c, keys[i]);
        if (x == NONE)
            continue;
        switch (c->policy) {
        case RECMG_LRU:
            l_unlink(c, &c->lru, x);
            break;
        case RECMG_LFU:
        case RECMG_BELADY:
        case RECMG_SCORED:
        case RECMG_SAMPLED:
            heap_remove(c, x);
            break;
        default:
            l_unlink(c, c->nodes[x].queue ? &c->lru : &c->small, x);
        }
        release_node(c, x);
        c->len--;
        removed++;
    }
    return removed;
}

void recmg_cache_contains(const recmg_cache *c, const uint64_t *keys, uint64_t n,
                          uint8_t *out)
{
    for (uint64_t i = 0; i < n; i++)
        out[i] = h_get(c, keys[i]) != NONE;
}

uint64_t recmg_cache_resident(const recmg_cache *c, uint64_t *out, uint64_t max)
{
    uint64_t k = 0;
    for (uint64_t i = 0; i <= c->mask && k < max; i++)
        if (c->slots[i] != NONE)
            out[k++] = c->nodes[c->slots[i]].key;
    return k;
}


/* ---- distinct keys per batch ----
 * A hash of indices into out (linear probing, NONE = empty), cleared after each
 * batch by undoing its insertions in reverse order (which restores a linear-probing
 * table exactly), so a batch costs its own size, never the table's.  Tables up to
 * SCRATCH_SLOTS are kept per thread between calls: a fresh multi-megabyte table per
 * batch costs more in page faults than the hashing itself. */
#define SCRATCH_SLOTS (1ULL << 22)
static __thread uint32_t *scratch;
static __thread uint64_t scratch_slots;

static inline int out_eq(const void *ctx, uint32_t j, const void *key)
{
    return (*(const uint64_t *const *)ctx)[j] == *(const uint64_t *)key;
}

static uint64_t distinct_core(const uint64_t *keys, uint64_t n, const uint64_t *offs,
                              uint64_t nb, uint64_t *out, uint32_t *counts, uint64_t *out_offs,
                              uint64_t *inv)
{
    uint64_t big = 0;
    for (uint64_t b = 0; b < nb; b++) {
        if (offs[b + 1] < offs[b] || offs[b + 1] > n)
            return UINT64_MAX;
        if (offs[b + 1] - offs[b] > big)
            big = offs[b + 1] - offs[b];
    }
    if (big >= NONE)
        return UINT64_MAX;
    uint64_t size = pow2_at_least(2 * big + 2);
    uint32_t *slot;
    if (size <= scratch_slots) {
        /* the table's first `size` slots (all empty, as every call leaves them): a
         * table as large as the largest call so far spread a 1,024-key batch over
         * megabytes, a cache miss a key (distinct_in_batches 9.7 against 5.8 ms a
         * tick of 520,000 reads, bench/daemon_bench.py under cProfile) */
        slot = scratch;
    } else {
        slot = malloc(size * sizeof(uint32_t));
        if (!slot)
            return UINT64_MAX;
        memset(slot, 0xff, size * sizeof(uint32_t));
        if (size <= SCRATCH_SLOTS) { /* keep it for the next calls */
            free(scratch);
            scratch = slot, scratch_slots = size;
        }
    }
    uint64_t mask = size - 1, k = 0;
    for (uint64_t b = 0; b < nb; b++) {
        uint64_t first = k;
        if (out_offs)
            out_offs[b] = k;
        const uint64_t *batch_out = out + first; /* slots index this batch's keys */
        for (uint64_t i = offs[b]; i < offs[b + 1]; i++) {
            uint64_t h = recmg_ix_find(slot, mask, mix(keys[i]), out_eq, &batch_out, &keys[i]);
            if (slot[h] == NONE) {
                slot[h] = (uint32_t)(k - first);
                out[k] = keys[i];
                if (counts)
                    counts[k] = 0;
                k++;
            }
            if (counts)
                counts[first + slot[h]]++;
            if (inv)
                inv[i] = first + slot[h];
        }
        for (uint64_t j = k; j-- > first;) { /* undo, newest first */
            uint64_t h = mix(out[j]) & mask;
            while (slot[h] != j - first)
                h = (h + 1) & mask;
            slot[h] = NONE;
        }
    }
    if (out_offs)
        out_offs[nb] = k;
    if (slot != scratch)
        free(slot);
    return k;
}

uint64_t recmg_next_use(const uint64_t *keys, uint64_t n, uint64_t *out)
{
    if (n >= NONE)
        return UINT64_MAX;
    uint64_t size = pow2_at_least(2 * n + 2), mask = size - 1, k = 0;
    uint32_t *slot = malloc(size * sizeof(uint32_t));
    uint64_t *seen = malloc((n ? n : 1) * sizeof(uint64_t)); /* distinct keys */
    uint64_t *pos = malloc((n ? n : 1) * sizeof(uint64_t));  /* their latest position */
    if (!slot || !seen || !pos) {
        free(slot), free(seen), free(pos);
        return UINT64_MAX;
    }
    memset(slot, 0xff, size * sizeof(uint32_t));
    const uint64_t *ctx = seen;
    for (uint64_t i = n; i-- > 0;) {
        uint64_t h = recmg_ix_find(slot, mask, mix(keys[i]), out_eq, &ctx, &keys[i]);
        if (slot[h] == NONE) {
            slot[h] = (uint32_t)k;
            seen[k++] = keys[i];
            out[i] = UINT64_MAX;
        } else {
            out[i] = pos[slot[h]];
        }
        pos[slot[h]] = i;
    }
    free(slot), free(seen), free(pos);
    return k;
}

uint64_t recmg_distinct_in_batches(const uint64_t *keys, uint64_t n, const uint64_t *offs,
                                   uint64_t nb, uint64_t *out, uint32_t *counts,
                                   uint64_t *out_offs)
{
    return distinct_core(keys, n, offs, nb, out, counts, out_offs, NULL);
}

uint64_t recmg_unique_ordered(const uint64_t *keys, uint64_t n, uint64_t *out,
                              uint32_t *counts)
{
    uint64_t offs[2] = {0, n};
    return distinct_core(keys, n, offs, 1, out, counts, NULL, NULL);
}

uint64_t recmg_unique_inverse(const uint64_t *keys, uint64_t n, uint64_t *out, uint64_t *inv)
{
    uint64_t offs[2] = {0, n};
    return distinct_core(keys, n, offs, 1, out, NULL, NULL, inv);
}

/* ---- scores: each key's value in fast memory, by the policy's own eviction order ----
 * A resident key gets its rank in the order the policy would evict (1 = the next
 * victim, len = the last); a key that is not resident gets 0.  LRU: from the LRU end
 * of its list.  LFU: (frequency, last use) ascending.  Belady: next use descending.
 * S3-FIFO: the small queue from its tail, then the main queue from its tail (the
 * order its eviction scans them, second chances aside).  O(len log len). */
static int rank_cmp(const void *pa, const void *pb, void *ctx)
{
    /* the cache comes as qsort_r's argument, not a file-level variable: two threads
     * may rank two caches at once (cffi releases the GIL during the call) */
    const recmg_cache *c = ctx;
    uint32_t a = *(const uint32_t *)pa, b = *(const uint32_t *)pb;
    if (h_before(c, a, b))
        return -1;
    if (h_before(c, b, a))
        return 1;
    return a < b ? -1 : a > b;
}

static uint64_t rank_list(const recmg_cache *c, const list *l, uint32_t *rank, uint64_t r)
{
    for (uint32_t v = l->tail; v != NONE; v = c->nodes[v].prev)
        rank[v] = (uint32_t)++r;
    return r;
}

int recmg_cache_scores(const recmg_cache *c, const uint64_t *keys, uint64_t n, double *out)
{
    uint32_t *rank = calloc(c->capacity + 1, sizeof *rank);
    if (!rank)
        return -ENOMEM;
    switch (c->policy) {
    case RECMG_LRU:
        rank_list(c, &c->lru, rank, 0);
        break;
    case RECMG_S3FIFO:
        rank_list(c, &c->lru, rank, rank_list(c, &c->small, rank, 0));
        break;
    default: { /* LFU, Belady, scored, sampled: residents sorted by eviction order */
        uint32_t *order = malloc((c->len + 1) * sizeof *order);
        if (!order) {
            free(rank);
            return -ENOMEM;
        }
        memcpy(order, c->heap, c->len * sizeof *order);
        qsort_r(order, c->len, sizeof *order, rank_cmp, (void *)c);
        for (uint64_t i = 0; i < c->len; i++)
            rank[order[i]] = (uint32_t)(i + 1);
        free(order);
    }
    }
    for (uint64_t i = 0; i < n; i++) {
        uint32_t v = h_get(c, keys[i]);
        out[i] = v == NONE ? 0.0 : (double)rank[v];
    }
    free(rank);
    return 0;
}

/* ---- the layout: vector keys to pages ---- */
uint64_t recmg_pages_of_keys(const uint64_t *keys, uint64_t n, const uint64_t *base,
                             const uint64_t *row_bytes, const uint64_t *first,
                             const int64_t *offset, uint64_t n_tables, unsigned shift,
                             uint64_t *out)
{
    if (shift > 63)
        return n ? 1 : 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t t = RECMG_KEY_TABLE(keys[i]);
        if (t >= n_tables)
            return i + 1;
        uint64_t page = ((base[t] + RECMG_KEY_ROW(keys[i]) * row_bytes[t]) >> shift) - first[t];
        out[i] = offset ? (uint64_t)offset[t] + page : t << RECMG_TABLE_SHIFT | page;
    }
    return 0;
}
