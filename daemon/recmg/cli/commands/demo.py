"""``recmg demo``: the workload under recmgd beside the same run with tiering off."""

from __future__ import annotations

from recmg.cli.output import require_daemon_extra


def add(sub) -> None:
    """``recmg demo``'s parser."""
    demo = sub.add_parser("demo", help="the newcomer's demo: the workload under recmgd, "
                          "beside the same run with tiering off")
    demo.add_argument("--seconds", type=float, default=20.0)
    demo.add_argument("--backend", choices=["auto", "move_pages", "simulated"], default="auto")
    demo.add_argument("--budget-mib", type=int, default=8)
    demo.add_argument("--profiles", default="recmg,learned,default",
                      help="comma list of the shipped profiles to run before tiering off")


def run(args) -> int:
    require_daemon_extra()
    from recmg.experiments import demo

    names = [p for p in args.profiles.split(",") if p]
    unknown = [p for p in names if p not in dict(demo.PROFILES)]
    if unknown or not names:
        raise ValueError(f"--profiles: unknown {unknown}; known: "
                         f"{', '.join(dict(demo.PROFILES))}")
    return demo.run(args.seconds, args.backend, args.budget_mib, profiles=names)
