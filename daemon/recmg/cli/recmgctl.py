"""recmgctl: inspect the host and control a running recmgd.

The control socket is, first found: ``--socket PATH`` (before or after the command),
$RECMGCTL_SOCKET, ``control.socket`` of the config file (``-c FILE``, default
/etc/recmg/recmgd.toml when it exists), /run/recmg/control.sock.

Output: the human views (status, policy list, metrics) or one JSON style (indented,
sorted keys) for everything else and with --json.

Exit codes (sysexits): 0 ok, 1 recmgd answered with an error (or a recording failed),
64 usage, 69 recmgd not reachable (or, for `check --strict`, no real migration
possible), 71 OS error reading sysfs/procfs, 75 `record --wait` timed out,
76 a malformed reply, 77 permission denied by recmgd.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from recmg.cli import check
from recmg.cli.output import (EX_CONFIG, EX_NOPERM, EX_PROTOCOL, EX_OK, EX_OSERR, EX_TEMPFAIL,
                              EX_UNAVAILABLE, Parser, fail, human_bytes,
                              print_json, require_daemon_extra, table)
from recmg import config as cfgmod
from recmg.config import Control
from recmg.host import topology

DEFAULT_SOCKET = Control().socket
SOCKET_ENV = "RECMGCTL_SOCKET"


def build_parser() -> Parser:
    # --socket and -c are accepted before and after the command (a parent parser):
    # the subcommand's copy uses SUPPRESS so it does not overwrite the top-level one
    common = Parser(add_help=False)
    common.add_argument("--socket", default=argparse.SUPPRESS,
                        help=f"control socket (else ${SOCKET_ENV}, the config's "
                        f"control.socket, {DEFAULT_SOCKET})")
    common.add_argument("-c", "--config", default=argparse.SUPPRESS,
                        help=f"recmgd config to take control.socket from "
                        f"(default {cfgmod.DEFAULT_PATH} when it exists)")
    p = Parser(prog="recmgctl", description=__doc__.split("\n")[0], parents=[common])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(subparsers, name, **kw):
        return subparsers.add_parser(name, parents=[common], **kw)

    c = sub.add_parser("check", help="what recmg can do on this host (topology, tiers, "
                       "conflicts, permissions); needs no daemon")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.add_argument("--strict", action="store_true",
                   help="exit 69 unless real page migration is possible")
    c.add_argument("--sys-root", default="/sys", help="sysfs root (default /sys)")
    c.add_argument("--proc-root", default="/proc", help="procfs root (default /proc)")
    st = add(sub, "status", help="targets, tiers, policy, hit ratio, moves, errors")
    st.add_argument("--json", action="store_true")
    add(sub, "stats", help="status plus every metric, as JSON")
    add(sub, "metrics", help="Prometheus text exposition")
    add(sub, "reload", help="re-read the config and policy (as SIGHUP)")
    add(sub, "pause", help="stop migrating (capture and policy keep running)")
    add(sub, "resume", help="migrate again")
    add(sub, "version", help="recmgd's version")
    pol = add(sub, "policy", help="policy profiles")
    psub = pol.add_subparsers(dest="action", required=True, metavar="ACTION")
    pl = add(psub, "list", help="available profiles")
    pl.add_argument("--names", action="store_true", help="names only (for completion)")
    ps = add(psub, "show", help="a profile's settings")
    ps.add_argument("name", nargs="?")
    pset = add(psub, "set", help="switch profile (a reload with that profile)")
    pset.add_argument("name")
    mod = add(sub, "models", help="models the learning loop trained on this host "
              "([learning]); 'rollback' restores the one before the serving one")
    mod.add_argument("action", nargs="?", choices=("list", "rollback"), default="list")
    mod.add_argument("--segment", help="rollback: the target (default: the only one)")
    mod.add_argument("--json", action="store_true")
    rec = add(sub, "record", help="record a target's accesses into an .rtrace file")
    rec.add_argument("--segment", help="target segment (default: the only one)")
    rec.add_argument("--batches", type=int, default=100)
    rec.add_argument("-o", "--output", help="absolute path written by recmgd")
    rec.add_argument("--status", action="store_true", help="show recordings")
    rec.add_argument("--wait", action="store_true",
                     help="return only when the file is written (or the recording failed)")
    rec.add_argument("--timeout", type=float, default=600.0,
                     help="seconds --wait waits (default 600; exit 75 when exceeded)")
    return p


def resolve_socket(args) -> str:
    """--socket, $RECMGCTL_SOCKET, the config's control.socket, the default."""
    if getattr(args, "socket", None):
        return args.socket
    if os.environ.get(SOCKET_ENV):
        return os.environ[SOCKET_ENV]
    path = getattr(args, "config", None)
    if path is not None or os.path.exists(cfgmod.DEFAULT_PATH):
        cfg = cfgmod.load(path)  # ConfigError: reported by main()
        return cfg.control.socket
    return DEFAULT_SOCKET


def cmd_check(args) -> int:
    try:
        topo = topology.probe(args.sys_root, args.proc_root)
    except (topology.TopologyError, OSError) as e:
        return fail(f"cannot read the host topology: {e}", EX_OSERR)
    if args.json:
        print_json(topo.to_dict())
    else:
        sys.stdout.write(check.render(topo))
    if args.strict and not topo.can_migrate:
        return EX_UNAVAILABLE
    return EX_OK


def render_status(d: dict) -> str:
    """recmgctl status's text, from the status recmgd sent (read as typed objects:
    recmg.service.status)."""
    from recmg.service.status import Status

    st = Status.from_dict(d)
    tot = st.totals
    lines = [f"recmgd {st.version}, up {st.uptime_s:.0f} s, tick {st.tick} "
             f"({st.last_tick_ms} ms), {'PAUSED' if st.paused else 'running'}"
             + (f", brake {st.brake.reason} (no {st.brake.stops}: {st.brake.detail})"
                if st.brake else ""),
             f"migration: {st.backend}" + (" (auto)" if st.backend_auto else "")
             + ("" if st.real_migration else
                " -- SIMULATED: placement is modelled, no pages move")
             + f"; fast nodes {st.fast_nodes}, slow nodes {st.slow_nodes} ({st.tier_basis})",
             f"policy: {st.profile} ({st.caching} + {st.prefetcher}); config {st.config}",
             f"totals: {tot.accesses} accesses, fast-tier hit ratio "
             f"{100 * tot.hit_ratio:.1f}%, {tot.ondemand} on-demand fetches, "
             f"{tot.promoted} pages promoted, {tot.demoted} demoted, {tot.pingpong} ping-pong"
             + ("" if st.real_migration else f", modelled stall {tot.modelled_stall_ms:.1f} ms"),
             "errors: " + (", ".join(f"{k} {v}" for k, v in sorted(tot.errors.items()))
                           or "none")]
    if st.targets:
        rows = [["segment", "pid", "pages", "fast", "budget", "hit%", "on-demand", "promoted",
                 "demoted", "refused", "dropped"]]
        for t in st.targets:
            rows.append([t.segment, str(t.pid), str(t.pages), str(t.fast_pages),
                         str(t.budget_pages), f"{100 * t.hit_ratio:.1f}", str(t.ondemand),
                         str(t.promoted), str(t.demoted), str(t.refused_by_admission),
                         str(t.dropped_batches)])
        lines += ["targets:", table(rows)]
        size = sum(t.fast_pages for t in st.targets) * os.sysconf("SC_PAGE_SIZE")
        lines.append(f"  fast-tier use: {human_bytes(size)}")
        for t in st.targets:
            lines += _target_lines(t)
    else:
        lines.append("targets: none attached")
    for name, why in sorted(st.rejected.items()):
        lines.append(f"rejected {name}: {why}")
    return "\n".join(lines) + "\n"


def render_models(d: dict) -> str:
    """recmgctl models: the learning loop's candidates per target, newest last."""
    head = ("learning: " + ("on" if d["enabled"] else "off (learning.enabled)")
            + (f"; UNAVAILABLE: {d['unavailable']}" if d.get("unavailable") else "")
            + f"; models under {d['state_dir']}/models")
    if not d["models"]:
        return head + "\nno model trained yet\n"
    rows = [["target", "model", "", "fetches (model/serving/S3-FIFO)", "validated on",
             "train CPU s"]]
    for m in d["models"]:
        f, a = m.get("fetches") or {}, m.get("accesses") or {}
        mark = "SERVING" if m["serving"] else "previous" if m["previous"] else \
            "rejected" if m.get("accepted") is False else ""
        rows.append([m["target"], m["id"], mark,
                     f"{f.get('candidate')}/{f.get('serving')}/{f.get('s3fifo')}",
                     f"{a.get('validate')} accesses", str(m.get("train_cpu_s"))])
    return head + "\n" + table(rows) + "\n"


def _why(m: dict) -> str:
    """Why a learned policy's fallback decides, in words."""
    reasons = {"fetches": "the model lost on fetches to it",
               "accuracy": f"online accuracy below {m.get('accuracy_floor')}"}
    return "; ".join(reasons.get(w, w) for w in m.get("why") or []) or "?"


def _target_lines(t) -> list[str]:
    """What a target's components say: its model, perf counts, closed loop, row
    layout and prefetcher (each component's own status object)."""
    out = []
    m = t.model
    if m:
        q = (f"online precision {m['precision']}, recall {m['recall']}, accuracy "
             f"{m['accuracy']} over {m['checks']} checks" if m["checks"]
             else "online check: no window complete yet")
        seen = " (counted per page)" if m.get("observe") == "counted" else ""
        out.append(f"  {t.segment}: model {m['name']}{seen} sha256 {m['sha256'][:12]}; {q}; "
                   + (f"FALLBACK: {m['serving']} decides ({_why(m)})" if m["fallback_active"]
                      else "the model decides"))
    perf = t.perf
    if perf:
        got = ", ".join(f"{k} {v}" for k, v in perf["last_tick"].items()) or "nothing"
        per = perf.get("cpu_ms_per_batch")
        out.append(f"  {t.segment}: perf last tick: {got}"
                   + (f"; CPU {per} ms per batch" if per else "")
                   + ("; unsupported: " + ", ".join(f"{k} ({v})" for k, v in
                                                    perf["unsupported"].items())
                      if perf["unsupported"] else ""))
    fb = t.feedback
    if fb and fb.get("window_ticks"):
        out.append(f"  {t.segment}: closed loop: rate {fb['rate_pages_per_tick']} "
                   f"pages/tick ({fb['rate_scale']:.3g} of the configured), "
                   f"{fb['backoffs']} backoffs"
                   + (f"; last window: {fb['slowdown']:+.1%} batch time after moves "
                      f"({fb['verdict']})" if "slowdown" in fb else ""))
    lay = t.layout
    if lay:
        share = ("hot-band share being measured" if lay["hot_share_applied"] is None
                 else f"{100 * lay['hot_share_now']:.0f}% of accesses in its hot bands, "
                 f"{100 * lay['hot_share_applied']:.0f}% when applied")
        out.append(f"  {t.segment}: row layout {lay['id']}: {share}"
                   + ("; STALE: a new layout would pay" if lay["relayout_advised"] else ""))
    ln = t.learning
    if ln and ln["state"] != "off":
        last = ln.get("last_round") or {}
        out.append(f"  {t.segment}: learning {ln['state']}"
                   + (f" ({ln['why']})" if ln.get("why") else "")
                   + f"; serving {ln['serving']}"
                   + (f"; window {ln['window_accesses']} accesses" if "window_accesses" in ln
                      else "")
                   + (f"; last round {last['verdict']}: {last.get('reason')}" if last else "")
                   + ("; S3-FIFO beat the serving model there, so it decides"
                      if last.get("fall_back") else ""))
    pf = t.prefetch or {}
    if pf.get("prefetches"):
        pm = pf.get("model")
        out.append(f"  {t.segment}: prefetcher {pf['name']}"
                   + (f" (model {pm['name']} sha256 {pm['sha256'][:12]})" if pm else "")
                   + f": {pf['issued']} pages prefetched, {pf['useful']} read while fast")
    return out


def call(args, req: dict):
    from recmg.service.control import request

    try:
        reply = request(args.socket_path, req)
    except FileNotFoundError:
        raise SystemExit(fail(f"recmgd is not running (no socket {args.socket_path})",
                              EX_UNAVAILABLE)) from None
    except PermissionError:
        raise SystemExit(fail(f"permission denied on {args.socket_path}: run as root or as a "
                              "member of control.read_group", EX_NOPERM)) from None
    except (ConnectionError, OSError) as e:
        raise SystemExit(fail(f"cannot talk to recmgd at {args.socket_path}: {e}",
                              EX_UNAVAILABLE)) from None
    except ValueError as e:  # not a reply recmgd would send
        raise SystemExit(fail(f"{args.socket_path}: {e}", EX_PROTOCOL)) from None
    if not reply.get("ok"):
        code = EX_NOPERM if reply.get("code") == "EPERM" else 1
        raise SystemExit(fail(reply.get("error", "error"), code))
    return reply["result"]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    require_daemon_extra()
    if args.command == "check":
        return cmd_check(args)
    try:
        args.socket_path = resolve_socket(args)
    except cfgmod.ConfigError as e:
        return fail(f"cannot find the control socket: {e}", EX_CONFIG)
    try:
        return _daemon_command(args)
    except SystemExit as e:
        return int(e.code or 0)


def _daemon_command(args) -> int:
    cmd = args.command
    if cmd == "status":
        st = call(args, {"cmd": "status"})
        print_json(st) if args.json else sys.stdout.write(render_status(st))
    elif cmd == "stats":
        print_json(call(args, {"cmd": "stats"}))
    elif cmd == "metrics":
        sys.stdout.write(call(args, {"cmd": "metrics"}))
    elif cmd in ("reload", "pause", "resume", "version"):
        print_json(call(args, {"cmd": cmd}))
    elif cmd == "policy":
        res = call(args, {"cmd": "policy", "action": args.action,
                          **({"name": args.name} if getattr(args, "name", None) else {})})
        if args.action == "list":
            for p in res:
                if args.names:
                    print(p["name"])
                else:
                    print(f"{'*' if p.get('active') else ' '} {p['name']:<12} "
                          f"{p.get('description') or p.get('error', '')}")
            if not args.names:
                print_registries()
        else:
            print_json(res)
    elif cmd == "models":
        if args.action == "rollback":
            req = {"cmd": "models", "action": "rollback"}
            if args.segment:
                req["segment"] = args.segment
            print_json(call(args, req))
        else:
            res = call(args, {"cmd": "models"})
            print_json(res) if args.json else sys.stdout.write(render_models(res))
    elif cmd == "record":
        if args.status:
            print_json(call(args, {"cmd": "record", "action": "status"}))
        else:
            if not args.output:
                return fail("record needs -o/--output (an absolute path)", 64)
            req = {"cmd": "record", "action": "start", "output": args.output,
                   "batches": args.batches}
            if args.segment:
                req["segment"] = args.segment
            started = call(args, req)
            if not args.wait:
                print_json(started)
                return EX_OK
            return wait_recording(args, started)
    return EX_OK


def print_registries() -> None:
    """What a profile can name: the engine's registries (recmg.registry)."""
    from recmg import registry

    for role, key in (("caching", "caching"), ("prefetcher", "prefetcher")):
        print(f"\n{role} (profile key {key!r}):")
        for name, daemon, summary in registry.rows(role):
            if daemon == "yes":
                print(f"  {name:<11} {summary}")


def wait_recording(args, started: dict) -> int:
    """Poll `record status` until the recording of started["segment"] is written."""
    deadline = time.monotonic() + args.timeout
    shown, last_shown = None, 0.0
    while True:
        rec = call(args, {"cmd": "record", "action": "status"}).get(started["segment"])
        if rec is None or rec.get("output") != started["output"]:
            return fail(f"the recording of {started['segment']} is gone (recmgd restarted, "
                        "or another recording replaced it)", 1)
        if rec.get("done"):
            print_json(rec)
            return EX_OK if not str(rec.get("result", "")).startswith("failed") else 1
        if time.monotonic() > deadline:
            return fail(f"timed out after {args.timeout:g} s with {rec.get('have', 0)} of "
                        f"{rec.get('want')} batches recorded", EX_TEMPFAIL)
        if rec.get("have") != shown and time.monotonic() - last_shown >= 1.0:
            shown, last_shown = rec.get("have"), time.monotonic()
            print(f"recording {started['segment']}: {shown} of {rec.get('want')} batches",
                  file=sys.stderr, flush=True)
        time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main())
