"""recmgd's Prometheus metrics (prometheus-client): names ``recmgd_*``, base units,
counters end in ``_total``, no pid or address labels (per-target figures are in
``recmgctl status``).  Served by ``recmgctl metrics``, an atomically rewritten
textfile, and an opt-in loopback HTTP port."""

from __future__ import annotations


from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from recmg.safefile import atomic_output

REGISTRY = CollectorRegistry(auto_describe=True)

TICKS = Counter("recmgd_ticks", "Pipeline ticks run", registry=REGISTRY)
TICK_SECONDS = Histogram("recmgd_tick_duration_seconds", "Wall time of one tick",
                         buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
                         registry=REGISTRY)
TARGETS = Gauge("recmgd_targets", "Attached target processes", registry=REGISTRY)
ACCESSES = Counter("recmgd_accesses", "Embedding accesses read from capture rings",
                   registry=REGISTRY)
ONDEMAND = Counter("recmgd_ondemand_fetches", "Distinct vectors per batch read from the "
                   "slow tier", registry=REGISTRY)
HIT_RATIO = Gauge("recmgd_fast_tier_hit_ratio", "Share of accesses served by fast nodes "
                  "since start", registry=REGISTRY)
PAGES_PROMOTED = Counter("recmgd_pages_promoted", "Pages moved to a fast node",
                         registry=REGISTRY)
PAGES_DEMOTED = Counter("recmgd_pages_demoted", "Pages moved to a slow node", registry=REGISTRY)
BYTES_MOVED = Counter("recmgd_migrated_bytes", "Bytes of pages moved", registry=REGISTRY)
MOVE_ERRORS = Counter("recmgd_move_errors", "Pages that failed to move, by errno",
                      ["errno"], registry=REGISTRY)
PINGPONG = Counter("recmgd_pingpong_pages", "Pages demoted soon after their promotion",
                   registry=REGISTRY)
RATE_LIMITED = Counter("recmgd_rate_limited_pages", "Planned moves deferred by the rate cap",
                       registry=REGISTRY)
TARGET_CPU = Counter("recmgd_target_cpu_seconds", "CPU time of the managed processes "
                     "(/proc/PID/stat user + system), summed over targets",
                     registry=REGISTRY)
TARGET_PAGE_FAULTS = Counter("recmgd_target_page_faults", "Page faults of the managed "
                             "processes (/proc/PID/stat), summed over targets",
                             registry=REGISTRY)
FEEDBACK_BACKOFFS = Counter("recmgd_feedback_backoffs", "Times a target's migration rate was "
                            "halved because its batches ran slower after moves",
                            registry=REGISTRY)
DEADLINE_HIT = Counter("recmgd_tick_deadline_hits", "Ticks whose migration hit the deadline",
                       registry=REGISTRY)
BRAKES = Counter("recmgd_safety_brakes", "Ticks a safety brake held moves back, by reason",
                 ["reason"], registry=REGISTRY)
CAPTURE_DROPPED = Counter("recmgd_capture_dropped_batches", "Batches clients dropped because "
                          "their ring was full", registry=REGISTRY)
SEGMENTS_REJECTED = Counter("recmgd_segments_rejected", "Capture segments that failed "
                            "validation", registry=REGISTRY)
INTERNAL_ERRORS = Counter("recmgd_internal_errors", "Target ticks that failed with an "
                          "error that was neither a bad segment nor an exit (a bug; "
                          "the target is detached, recmgd goes on)", registry=REGISTRY)
RELOADS = Counter("recmgd_reloads", "Config reloads, by result", ["result"], registry=REGISTRY)
MODEL_FALLBACK = Gauge("recmgd_model_fallback_targets", "Targets whose learned caching "
                       "policy has handed its decisions to S3-FIFO", registry=REGISTRY)
MODEL_ACCURACY = Gauge("recmgd_model_online_accuracy", "Lowest online accuracy of a learned "
                       "caching policy against delayed OPT labels (NaN: none checked)",
                       registry=REGISTRY)
PAUSED = Gauge("recmgd_paused", "1 while migration is paused", registry=REGISTRY)


def exposition() -> str:
    return generate_latest(REGISTRY).decode()


def write_textfile(path: str) -> None:
    """Rewrite a node_exporter textfile atomically (temp file + rename)."""
    with atomic_output(path) as f:
        f.write(exposition().encode())
