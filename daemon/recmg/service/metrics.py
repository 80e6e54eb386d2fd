"""recmgd's Prometheus metrics (prometheus-client): names ``recmgd_*``, base units,
counters end in ``_total`` (without the client library's ``_created`` twins), no pid
or address labels.  What is counted per target carries a ``target`` label, the
segment's name (``recmg.<name>.<pid>`` without the pid, so a restarted process keeps
its series); a name's series are removed when no attached target has it any more.  Served by ``recmgctl metrics``, an atomically rewritten
textfile, and an opt-in loopback HTTP port."""

from __future__ import annotations


from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram,
                               disable_created_metrics, generate_latest)

from recmg.safefile import atomic_output

disable_created_metrics()  # a `_created` sample per counter is noise to every scraper
REGISTRY = CollectorRegistry(auto_describe=True)
T = ["target"]  # the per-target label

TICKS = Counter("recmgd_ticks", "Pipeline ticks run", registry=REGISTRY)
TICK_SECONDS = Histogram("recmgd_tick_duration_seconds", "Wall time of one tick",
                         buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
                         registry=REGISTRY)
TARGETS = Gauge("recmgd_targets", "Attached target processes", registry=REGISTRY)
ACCESSES = Counter("recmgd_accesses", "Embedding accesses read from capture rings",
                   T, registry=REGISTRY)
ONDEMAND = Counter("recmgd_ondemand_fetches", "Distinct vectors per batch read from the "
                   "slow tier", T, registry=REGISTRY)
HIT_RATIO = Gauge("recmgd_fast_tier_hit_ratio", "Share of accesses served by fast nodes "
                  "since start", registry=REGISTRY)
PAGES_PROMOTED = Counter("recmgd_pages_promoted", "Pages moved to a fast node",
                         T, registry=REGISTRY)
PAGES_DEMOTED = Counter("recmgd_pages_demoted", "Pages moved to a slow node", T, registry=REGISTRY)
BYTES_MOVED = Counter("recmgd_migrated_bytes", "Bytes of pages moved", T, registry=REGISTRY)
MOVE_ERRORS = Counter("recmgd_move_errors", "Pages that failed to move, by errno",
                      ["errno"], registry=REGISTRY)
PINGPONG = Counter("recmgd_pingpong_pages", "Pages demoted soon after their promotion",
                   T, registry=REGISTRY)
LEARNING_ROUNDS = Counter("recmgd_learning_rounds", "Learning rounds finished, by result "
                          "(accepted, rejected: lost on fetches, failed)", ["result"],
                          registry=REGISTRY)
REFUSED = Counter("recmgd_admission_refused_pages", "Promotions the admission test "
                  "refused (not hotter than the fast page they would displace)",
                  T, registry=REGISTRY)
RATE_LIMITED = Counter("recmgd_rate_limited_pages", "Planned moves deferred by the rate cap",
                       T, registry=REGISTRY)
TARGET_CPU = Counter("recmgd_target_cpu_seconds", "CPU time of the managed processes "
                     "(/proc/PID/stat user + system)",
                     T, registry=REGISTRY)
TARGET_PAGE_FAULTS = Counter("recmgd_target_page_faults", "Page faults of the managed "
                             "processes (/proc/PID/stat)",
                             T, registry=REGISTRY)
FEEDBACK_BACKOFFS = Counter("recmgd_feedback_backoffs", "Times a target's migration rate was "
                            "halved because its batches ran slower after moves",
                            registry=REGISTRY)
DEADLINE_HIT = Counter("recmgd_tick_deadline_hits", "Ticks whose migration hit the deadline",
                       registry=REGISTRY)
BRAKES = Counter("recmgd_safety_brakes", "Ticks a safety brake held moves back, by reason",
                 ["reason"], registry=REGISTRY)
CAPTURE_DROPPED = Counter("recmgd_capture_dropped_batches", "Batches clients dropped because "
                          "their ring was full", T, registry=REGISTRY)
SEGMENTS_REJECTED = Counter("recmgd_segments_rejected", "Capture segments that failed "
                            "validation", registry=REGISTRY)
INTERNAL_ERRORS = Counter("recmgd_internal_errors", "Target ticks that failed with an "
                          "error that was neither a bad segment nor an exit (a bug; "
                          "the target is detached, recmgd goes on)", registry=REGISTRY)
KEYS_THINNED = Counter("recmgd_keys_thinned", "Keys read but left out of the step to "
                       "keep a tick within target.work_ms_per_tick", T, registry=REGISTRY)
TICKS_DEFERRED = Counter("recmgd_target_ticks_deferred", "Ticks a target waited for "
                         "because the tick's work time had run out", T, registry=REGISTRY)
RELOADS = Counter("recmgd_reloads", "Config reloads, by result", ["result"], registry=REGISTRY)
MODEL_FALLBACK = Gauge("recmgd_model_fallback_targets", "Targets whose learned caching "
                       "policy has handed its decisions to its fallback (S3-FIFO unless the profile's "
                       "model_fallback says otherwise)", registry=REGISTRY)
MODEL_FALLBACK_REASON = Gauge("recmgd_model_fallback_reason", "1 while a target's learned "
                              "caching policy has handed its decisions to its fallback for "
                              "this reason (fetches: it lost on misses to the shadow; "
                              "accuracy: below the floor)", ["target", "reason"],
                              registry=REGISTRY)
MODEL_ACCURACY = Gauge("recmgd_model_online_accuracy", "Lowest online accuracy of a learned "
                       "caching policy against delayed OPT labels (NaN: none checked)",
                       registry=REGISTRY)
LAYOUT_STALENESS = Gauge("recmgd_layout_staleness", "Share of a target's accesses in its "
                         "row layout's hot bands lost since the layout was applied (0: as "
                         "then; above 0.2 recmgd advises a new layout)", T, registry=REGISTRY)
PAUSED = Gauge("recmgd_paused", "1 while migration is paused", registry=REGISTRY)


def exposition() -> str:
    return generate_latest(REGISTRY).decode()


def write_textfile(path: str) -> None:
    """Rewrite a node_exporter textfile atomically (temp file + rename)."""
    with atomic_output(path) as f:
        f.write(exposition().encode())


PER_TARGET = (ACCESSES, ONDEMAND, PAGES_PROMOTED, PAGES_DEMOTED, BYTES_MOVED, PINGPONG, REFUSED,
              RATE_LIMITED, TARGET_CPU, TARGET_PAGE_FAULTS, CAPTURE_DROPPED, KEYS_THINNED,
              TICKS_DEFERRED, LAYOUT_STALENESS)


def forget_target(label: str) -> None:
    """Remove a target name's series (no attached target has that name any more)."""
    for metric in PER_TARGET:
        try:
            metric.remove(label)
        except KeyError:
            pass
    for reason in FALLBACK_REASONS:
        try:
            MODEL_FALLBACK_REASON.remove(label, reason)
        except KeyError:
            pass


FALLBACK_REASONS = ("fetches", "accuracy")
