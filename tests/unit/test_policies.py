"""Caching policies and prefetchers against hand-worked examples from their papers'
descriptions; Belady against a brute-force optimum."""

from functools import lru_cache

import numpy as np
import pytest

from recmg import registry
from recmg.engine.policy import prefetch as pf
from recmg.engine.policy.cache import Cache, next_use, unique_inverse, unique_ordered
from recmg.trace.format import make_keys

A, B, C, D, E = (int(k) for k in make_keys(0, [1, 2, 3, 4, 5]))
MODEL_FREE = [n for n in registry.names("prefetcher") if not registry.needs_model("prefetcher", n)]


def hits(policy, seq, cap, **kw):
    c = Cache(policy, cap, **kw)
    seq = np.array(seq, np.uint64)
    return c.access(seq, next_use(seq) if policy == "belady" else None).astype(int).tolist()


def test_lru_evicts_least_recently_used():
    # A B A C: C evicts B (A was used more recently), so B then misses, A still hits
    assert hits("lru", [A, B, A, C, B, A], 2) == [0, 0, 1, 0, 0, 0]
    assert hits("lru", [A, B, A, C, A], 2) == [0, 0, 1, 0, 1]


def test_lfu_evicts_least_frequently_used_and_ages():
    # A twice, B once: C evicts B (lower frequency) even though A is older
    assert hits("lfu", [A, A, B, C, A], 2) == [0, 1, 0, 0, 1]
    # with aging every 4 accesses counts halve: history fades
    c = Cache("lfu", 2, aging=4)
    c.access(np.array([A] * 7 + [B], np.uint64))
    assert set(c.resident().tolist()) == {A, B}


def test_s3fifo_keeps_a_reused_key_through_a_scan():
    """Yang et al.: one-hit wonders pass through the small FIFO only; a key re-accessed
    after being evicted to the ghost queue is inserted into the main FIFO."""
    scan = [int(k) for k in make_keys(1, np.arange(100))]
    seq = [A, B, A] + scan + [A]
    # capacity 10: small = 1, main = 9.  A was re-accessed in small -> promoted to main.
    assert hits("s3fifo", seq, 10)[-1] == 1
    assert hits("lru", seq, 10)[-1] == 0
    c = Cache("s3fifo", 10)
    c.access(np.array([A, B, C], np.uint64))  # B, C evicted from small into the ghost
    c.access(np.array([B], np.uint64))  # ghost hit: B goes to main
    c.access(np.array(scan[:50], np.uint64))
    assert c.contains(np.array([B], np.uint64))[0]


def brute_force_opt_misses(seq, cap):
    """Minimum misses over all eviction choices (bypass allowed), by memoized search."""
    @lru_cache(maxsize=None)
    def best(i, cache):
        if i == len(seq):
            return 0
        x = seq[i]
        if x in cache:
            return best(i + 1, cache)
        options = [best(i + 1, cache)]  # bypass
        if len(cache) < cap:
            options.append(best(i + 1, cache | {x}))
        else:
            options += [best(i + 1, (cache - {v}) | {x}) for v in cache]
        return 1 + min(options)
    return best(0, frozenset())


@pytest.mark.parametrize("seed", range(12))
def test_belady_matches_brute_force_optimum(seed):
    rng = np.random.default_rng(seed)
    seq = [int(k) for k in make_keys(0, rng.integers(0, 5, 14))]
    cap = int(rng.integers(1, 4))
    got = len(seq) - sum(hits("belady", seq, cap))
    assert got == brute_force_opt_misses(tuple(seq), cap)


@pytest.mark.parametrize("policy", ["lru", "lfu", "s3fifo"])
def test_no_online_policy_beats_belady(policy):
    rng = np.random.default_rng(5)
    seq = make_keys(0, rng.zipf(1.3, 5000) % 400)
    online = sum(hits(policy, seq, 40))
    assert online <= sum(hits("belady", seq, 40))


def test_cache_api_edges():
    c = Cache("lru", 3)
    keys = np.array([A, B, C, D], np.uint64)
    assert c.insert(keys) == 4 and len(c) == 3
    assert c.contains(keys).tolist() == [False, True, True, True]
    assert c.remove(np.array([B, E], np.uint64)) == 1 and len(c) == 2
    assert sorted(c.resident().tolist()) == [C, D]
    with pytest.raises(ValueError, match="unknown caching policy"):
        Cache("fifo", 3)
    with pytest.raises(ValueError, match="at least 1"):
        Cache("lru", 0)
    with pytest.raises(ValueError, match="next-use"):
        Cache("belady", 2).access(keys)


def test_unique_ordered_and_next_use():
    keys = np.array([5, 3, 5, 7, 3, 5], np.uint64)
    u, n = unique_ordered(keys, with_counts=True)
    assert u.tolist() == [5, 3, 7] and n.tolist() == [3, 2, 1]
    never = np.iinfo(np.uint64).max
    assert next_use(keys).tolist() == [2, 4, 5, never, never, never]
    assert next_use(np.zeros(0, np.uint64)).tolist() == []
    # the hash pass equals the definition on a skewed stream (a stable sort groups
    # equal keys: each occurrence's successor in the group is its next use)
    keys = (np.random.default_rng(3).zipf(1.1, 200_000) % 5_000).astype(np.uint64)
    keys[::97] = np.uint64(2**64 - 1)  # the largest key is a key like any other
    order = np.argsort(keys, kind="stable")
    want = np.full(len(keys), never, np.uint64)
    same = keys[order][1:] == keys[order][:-1]
    want[order[:-1][same]] = order[1:][same]
    np.testing.assert_array_equal(next_use(keys), want)


@pytest.mark.parametrize("policy", ["lru", "lfu", "s3fifo", "belady", "sampled"])
def test_state_is_at_most_80_bytes_per_key_and_fixed(policy):
    """What the C core really allocates (a node, a free-stack slot and two hash slots
    per key; a heap slot for the ordered kinds; S3-FIFO's ghost keys and their hash):
    bounded per key, and the same after a million accesses as at creation."""
    from recmg.engine.policy.cache import Cache

    for cap in (1000, 1 << 16, 100_000):
        c = Cache(policy, cap)
        before = c.state_bytes()
        assert before / cap <= 80, (policy, cap, before / cap)
        if policy not in ("belady", "sampled"):  # (these two need next uses)
            c.access(np.random.default_rng(0).integers(0, 10 * cap, 1_000_000, dtype=np.uint64))
        assert c.state_bytes() == before


ROWS = [1000, 1000]


def keys(table, rows):
    return make_keys(table, np.array(rows))


def test_next_n():
    p = pf.make("nextn", ROWS, degree=2)
    got = p.observe(keys(0, [10, 998]), keys(0, [10, 998]))
    assert got.tolist() == keys(0, [11, 12, 999]).tolist()  # row 1000 is outside


def test_stride_detects_per_table_strides():
    p = pf.make("stride", ROWS, degree=2)
    m = np.concatenate([keys(1, [2, 5, 8]), keys(0, [7, 100])])
    got = p.observe(m, m)
    assert got.tolist() == keys(1, [11, 14]).tolist()
    # the stride carries across windows: 8 -> 11 continues it
    got = p.observe(keys(1, [11]), keys(1, [11]))
    assert got.tolist() == keys(1, [14, 17]).tolist()


def test_best_offset_learns_the_offset_of_recent_misses():
    p = pf.make("bestoffset", ROWS)
    p.observe(keys(0, [10, 20, 30]), keys(0, [10, 20, 30]))
    got = p.observe(keys(0, [14, 24, 34]), keys(0, [14, 24, 34]))
    assert p.best == 4
    assert got.tolist() == keys(0, [18, 28, 38]).tolist()


def test_sms_replays_a_footprint_for_the_same_trigger_offset():
    p = pf.make("sms", ROWS)
    w1 = keys(0, [0, 3, 5])  # region 0, trigger offset 0, footprint {0, 3, 5}
    assert len(p.observe(w1, w1)) == 0
    w2 = keys(0, [64])  # region 1, trigger offset 0: predict {64, 67, 69}
    assert p.observe(w2, w2).tolist() == keys(0, [64, 67, 69]).tolist()


def test_bingo_prefers_the_long_event():
    p = pf.make("bingo", ROWS)
    p.observe(keys(0, [64, 65]), keys(0, [64, 65]))  # trigger row 64: {64, 65}
    p.observe(keys(0, [128, 130]), keys(0, [128, 130]))  # trigger offset 0: {128, 130}
    # an unseen row with offset 0 falls back to the latest short-event footprint
    assert p.observe(keys(0, [192]), keys(0, [192])).tolist() == keys(0, [192, 194]).tolist()
    # the exact trigger row 64 seen before: the long event's footprint wins over the
    # short event (now {0} after the last window)
    assert p.observe(keys(0, [64]), keys(0, [64])).tolist() == keys(0, [64, 65]).tolist()


def test_stms_replays_what_followed_a_miss():
    p = pf.make("stms", ROWS, degree=3)
    seq = keys(0, [1, 2, 3, 4])
    p.observe(seq, seq)
    assert p.observe(keys(0, [1]), keys(0, [1])).tolist() == keys(0, [2, 3, 4]).tolist()


def test_domino_disambiguates_with_two_misses():
    d = pf.make("domino", ROWS, degree=1)
    s = pf.make("stms", ROWS, degree=1)
    for p in (d, s):
        first = keys(0, [1, 2, 3, 9, 2, 4, 1])  # 1 2 -> 3, 9 2 -> 4
        p.observe(first, first)
    # after the miss sequence (1, 2), Domino predicts 3; STMS only sees 2 -> 4
    assert d.observe(keys(0, [2]), keys(0, [2])).tolist() == keys(0, [3]).tolist()
    assert s.observe(keys(0, [2]), keys(0, [2])).tolist() == keys(0, [4]).tolist()


def test_isb_linearizes_each_tables_stream():
    p = pf.make("isb", ROWS, degree=2)
    m = np.concatenate([keys(0, [50, 7, 300]), keys(1, [9])])
    p.observe(m, m)
    assert p.observe(keys(0, [50]), keys(0, [50])).tolist() == keys(0, [7, 300]).tolist()
    assert len(p.observe(keys(1, [9]), keys(1, [9]))) == 0


def test_oracle_returns_the_future_and_registry_is_complete():
    p = pf.make("oracle", ROWS)
    assert p.needs_future and p.observe(keys(0, [1]), keys(0, [1]),
                                        keys(0, [5, 6])).tolist() == keys(0, [5, 6]).tolist()
    assert set(registry.names("prefetcher")) - set(MODEL_FREE) == {
        "learned", "deltalstm", "voyager", "artifact"}
    assert set(MODEL_FREE) == {"none", "nextn", "stride", "bestoffset", "sms", "bingo",
                                   "stms", "domino", "isb", "oracle", "oracle-seen"}
    # the history bound: only keys read before
    s = pf.make("oracle-seen", ROWS)
    assert s.needs_future
    assert s.observe(keys(0, [1, 2]), keys(0, [1]), keys(0, [2, 5, 1])).tolist() == \
        keys(0, [2, 1]).tolist()
    with pytest.raises(ValueError, match="unknown prefetcher"):
        pf.make("magic", ROWS)


def test_every_candidate_lies_inside_its_table():
    rng = np.random.default_rng(0)
    rows = [100, 5]
    m = np.concatenate([make_keys(0, rng.integers(0, 100, 200)), make_keys(1, rng.integers(0, 5, 50))])
    for name in MODEL_FREE:
        p = pf.make(name, rows)
        for _ in range(3):
            got = p.observe(m, m, m if p.needs_future else None)
            t, r = got >> np.uint64(40), got & np.uint64((1 << 40) - 1)
            assert ((t == 0) & (r < 100) | (t == 1) & (r < 5)).all(), name


def test_the_brute_force_reference_on_a_sequence_worked_by_hand():
    # 2 slots, A B C A B C: 3 cold misses, then OPT keeps A and B (evicting C or
    # bypassing it) and misses only C again: 4 misses
    assert brute_force_opt_misses(tuple([A, B, C, A, B, C]), 2) == 4
    assert brute_force_opt_misses(tuple([A, B, A, B]), 1) == 3


@pytest.mark.parametrize("name", ["stms", "domino", "isb"])
def test_temporal_prefetcher_state_is_bounded(name):
    """History, index, pair table and structural map hold at most ``history`` entries
    however many distinct misses arrive (they grew without bound; Domino rebuilt its
    pair table on every trim)."""
    from recmg.engine.policy import prefetch as pf

    p = pf.make(name, [1 << 30], budget=64, degree=2, history=100)
    size = p.state_bytes()
    assert size < 100 * 200 + 4096  # a few words per entry, allocated once
    rng = np.random.default_rng(0)
    for _ in range(50):
        p.observe(np.zeros(0, np.uint64), rng.integers(0, 1 << 30, 200).astype(np.uint64))
    assert p.state_bytes() == size
    # still replays what it remembers
    seq = np.arange(1, 6, dtype=np.uint64)
    p.observe(np.zeros(0, np.uint64), seq)
    assert 2 in p.observe(np.zeros(0, np.uint64), seq[:1]).tolist()


@pytest.mark.parametrize("policy", ["lru", "lfu", "belady", "s3fifo"])
def test_scores_rank_residents_in_the_policys_eviction_order(policy):
    """The lowest-scored resident key is the policy's next victim (S3-FIFO: its queue
    order, second chances aside); keys not resident score 0."""
    rng = np.random.default_rng(3)
    keys = (rng.zipf(1.3, 3000) % 200).astype(np.uint64)
    nu = next_use(keys)
    for trial in range(20):
        c = Cache(policy, 16)
        cut = 500 + 100 * trial
        c.access(keys[:cut], nu[:cut] if policy == "belady" else None)
        res = c.resident()
        sc = c.scores(res)
        assert (sc > 0).all() and sorted(sc.tolist()) == list(range(1, len(res) + 1))
        assert c.scores(np.array([10**9], np.uint64)).tolist() == [0.0]
        if policy == "s3fifo":
            continue
        victim = res[int(np.argmin(sc))]
        new = np.array([10**6 + trial], np.uint64)  # a miss: one eviction
        c.access(new, np.array([0], np.uint64) if policy == "belady" else None)  # soon: admitted
        assert not c.contains(np.array([victim], np.uint64))[0], (policy, trial)


def test_sampled_eviction_with_true_next_uses_approaches_belady():
    """The LRB-style core: fed exact next-use times, its sampled eviction (64 draws)
    fetches within 10% of MIN-with-bypass and far less than LRU."""
    rng = np.random.default_rng(5)
    keys = (rng.zipf(1.2, 40_000) % 5000).astype(np.uint64)
    nu = next_use(keys)
    # the core's clock at each access is its position + 1
    pred = np.where(nu == np.iinfo(np.uint64).max, np.uint64(1 << 40), nu + np.uint64(1))
    misses = {}
    for policy in ("lru", "belady", "sampled"):
        c = Cache(policy, 300)
        hits = c.access(keys, {"lru": None, "belady": nu, "sampled": pred}[policy])
        misses[policy] = int(np.count_nonzero(~hits))
    assert misses["sampled"] <= 1.1 * misses["belady"] < misses["lru"], misses
    assert len(c) == 300 and len(set(c.resident().tolist())) == 300


def test_sampled_eviction_expects_an_idle_key_back_no_sooner_than_its_idle_time():
    """A key predicted back soon that stays idle is a misprediction: its expected next
    use becomes now + its idle time, so it goes before a key predicted moderately far."""
    c = Cache("sampled", 2)
    seq = [1, 2] + [2] * 28  # clock 1: key 1 predicted at 2; key 2 then predicted at 50
    c.access(np.array(seq, np.uint64), np.array([2] + [50] * 29, np.uint64))
    c.access(np.array([3], np.uint64), np.array([35], np.uint64))  # clock 31: one eviction
    # key 1: max(2, 31 + 30) = 61 > key 2's 50: key 1 goes
    assert sorted(c.resident().tolist()) == [2, 3]
    # the next victim is the key expected furthest ahead: key 2 (50), then key 3 (35)
    assert c.scores(np.array([2, 3], np.uint64)).tolist() == [1.0, 2.0]


@pytest.mark.parametrize("name,kw", [("stms", {"history": 64}), ("domino", {"history": 64}),
                                     ("isb", {"history": 64}), ("sms", {"entries": 32}),
                                     ("bingo", {"entries": 32}), ("bestoffset", {}),
                                     ("stms", {}), ("isb", {}), ("bingo", {}),
                                     ("domino", {"history": 5}), ("isb", {"history": 3}),
                                     ("bingo", {"entries": 4}), ("stride", {})])
def test_native_prefetchers_propose_what_the_python_models_did(name, kw):
    """The C (and vectorized) prefetchers against their former pure-Python code
    (tests/unit/prefetch_reference.py), window by window, small histories included so
    that eviction is exercised: the same candidates in the same order."""
    import prefetch_reference as ref

    rows = [300, 50, 2000]
    budget = 2 if name == "stride" else 10**6  # stride: per table, the last `budget`
    now = pf.make(name, rows, budget=budget, degree=3 if name != "sms" and name != "bingo"
                  else 0, **kw)
    old = getattr(ref, type(now).__name__)(rows, budget=budget, degree=now.degree, **kw)
    rng = np.random.default_rng(7)
    for w in range(60):
        t = rng.integers(0, 3, 120)
        r = np.minimum(rng.zipf(1.3, 120) + 40 * (w % 5), [300, 50, 2000][0]) % np.array(
            rows)[t]
        keys = (t.astype(np.uint64) << np.uint64(40)) | r.astype(np.uint64)
        misses = keys[rng.random(120) < 0.5]
        assert now.observe(keys, misses).tolist() == old.observe(keys, misses).tolist(), w


@pytest.mark.parametrize("budget", [2, 100])
def test_vectorized_stride_proposes_what_the_python_model_did_on_strided_misses(budget):
    import prefetch_reference as ref

    rows = [300, 50, 2000]
    now, old = pf.make("stride", rows, budget=budget, degree=3), \
        ref.Stride(rows, budget=budget, degree=3)
    rng = np.random.default_rng(7)
    proposed = 0
    for w in range(200):
        t = rng.integers(0, 3, 60)
        base = rng.integers(0, 50, 60) * (rng.random(60) < 0.3)
        r = (np.arange(60) * rng.integers(1, 4) + base) % np.array(rows)[t]
        keys = (t.astype(np.uint64) << np.uint64(40)) | r.astype(np.uint64)
        misses = keys[rng.random(60) < 0.8]
        got = now.observe(keys, misses).tolist()
        assert got == old.observe(keys, misses).tolist(), w
        proposed += len(got)
    assert proposed > 1000


def test_unique_inverse_gives_first_use_order_and_each_keys_index():
    rng = np.random.default_rng(3)
    keys = rng.integers(0, 5000, 40_000).astype(np.uint64)
    out, inv = unique_inverse(keys)
    assert np.array_equal(out[inv], keys) and inv.dtype == np.intp
    _, first = np.unique(keys, return_index=True)
    assert np.array_equal(out, keys[np.sort(first)])  # first-occurrence order
    empty, inv0 = unique_inverse(keys[:0])
    assert len(empty) == 0 and len(inv0) == 0
