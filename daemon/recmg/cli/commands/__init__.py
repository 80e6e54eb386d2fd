"""One module per ``recmg`` command: each has ``add(sub)`` (its parser) and
``run(args)`` (its exit code)."""
