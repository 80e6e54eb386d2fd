"""``recmg capture``: list and clean the segments of instrumented processes."""

from __future__ import annotations

from recmg.cli.output import EX_NOPERM, EX_OK, print_json


def add(sub) -> None:
    """``recmg capture``'s parser."""
    cap = sub.add_parser("capture", help="capture segments of instrumented processes")
    csub = cap.add_subparsers(dest="action", required=True, metavar="ACTION")
    cls = csub.add_parser("list", help="segments in /dev/shm, validated")
    cls.add_argument("--shm-dir", default=None, help="segment directory (default: $RECMG_SHM_DIR, /dev/shm/recmg if present, /dev/shm)")
    cls.add_argument("--json", action="store_true")
    ccl = csub.add_parser("clean", help="remove segments whose process is gone (killed "
                          "clients leave them; recmgd removes them too)")
    ccl.add_argument("--shm-dir", default=None, help="segment directory (default: $RECMG_SHM_DIR, /dev/shm/recmg if present, /dev/shm)")
    ccl.add_argument("--dry-run", action="store_true", help="list, remove nothing")


def run(args) -> int:
    from recmg.capture import segment as seg
    from recmg.capture.reader import SegmentError, SegmentReader, discover, remove_stale

    args.shm_dir = args.shm_dir or seg.default_dir()
    if args.action == "clean":
        stale = remove_stale(args.shm_dir, dry_run=args.dry_run)
        for path, err in stale:
            print(f"cannot remove {path}: {err}" if err else
                  f"{'would remove' if args.dry_run else 'removed'} {path}")
        done = sum(1 for _, err in stale if err is None)
        verb = "would remove" if args.dry_run else "removed"
        print(f"{verb} {done} stale segment(s) in {args.shm_dir}"
              + (f"; {len(stale) - done} could not be removed" if len(stale) > done else ""))
        return EX_NOPERM if any(err for _, err in stale) else EX_OK
    rows = []
    for path in discover(args.shm_dir):
        try:
            with SegmentReader(path) as r:
                rows.append({"segment": path.name, "pid": r.pid, "uid": r.uid, "ok": True,
                             "tables": len(r.tables), **r.stats()})
        except SegmentError as e:
            rows.append({"segment": path.name, "ok": False, "error": str(e)})
    if args.json:
        print_json(rows)
    elif not rows:
        print(f"no capture segments in {args.shm_dir}")
    for row in ([] if args.json else rows):
        if row["ok"]:
            print(f"{row['segment']}: pid {row['pid']} uid {row['uid']}, {row['tables']} "
                  f"tables, {row['recorded_batches']} batches recorded, "
                  f"{row['dropped_batches']} dropped")
        else:
            print(f"{row['segment']}: rejected: {row['error']}")
    return EX_OK
