"""Running an engine: ``build`` turns a config and a profile into an Engine (the
registry constructs each part).  recmgd's pipeline and ``recmg sim --config`` both
build here."""
