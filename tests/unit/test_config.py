"""recmgd.toml parsing: defaults, every error with its key path, profiles."""

import pytest

from recmg.cli import recmgd
from recmg.service import config as c


def test_defaults_and_a_full_file():
    assert c.parse("") == c.Config()
    cfg = c.parse("""
tick_ms = 250
[target]
segments = ["ranker"]
pids = [42]
[migration]
backend = "dryrun"
rate_mib_s = 64
[policy]
profile = "lru"
""")
    assert cfg.tick_ms == 250 and cfg.target.segments == ("ranker",)
    assert cfg.migration.backend == "dryrun" and cfg.migration.rate_mib_s == 64
    assert cfg.policy.profile == "lru"


def test_segments_take_a_name_a_file_name_or_star():
    cfg = c.parse('[target]\nsegments = ["ranker", "recmg.ranker.77", "*"]\n')
    assert cfg.target.segments == ("ranker", "recmg.ranker.77", "*")
    with pytest.raises(c.ConfigError) as ei:
        c.parse('[target]\nsegments = ["/dev/shm/recmg.ranker.77"]\n')
    assert ei.value.problems[0][0] == "target.segments"
    assert "recmg.<name>.<pid>" in ei.value.problems[0][1]


def test_all_problems_are_reported_with_key_paths():
    with pytest.raises(c.ConfigError) as ei:
        c.parse("""
tick_ms = "fast"
colour = 1
[migration]
backend = "teleport"
batch_pages = 0
[target]
pids = ["one"]
[safety]
on_confict = "warn"
""", "x.toml")
    keys = [k for k, _ in ei.value.problems]
    assert keys == ["tick_ms", "colour", "migration.backend", "migration.batch_pages",
                    "target.pids", "safety.on_confict"]
    assert "x.toml: tick_ms: must be of type int" in str(ei.value)
    assert "unknown key" in dict(ei.value.problems)["safety.on_confict"]


def test_syntax_error_and_missing_files(tmp_path):
    with pytest.raises(c.ConfigError, match="syntax"):
        c.parse("tick_ms = = 3")
    with pytest.raises(c.ConfigError, match="does not exist"):
        c.load(str(tmp_path / "nope.toml"))


def test_profiles_vendor_and_admin_override(tmp_path):
    vendor, admin = tmp_path / "vendor", tmp_path / "admin"
    vendor.mkdir(), admin.mkdir()
    (vendor / "p.toml").write_text('schema = 1\ncaching = "lru"\n')
    (admin / "p.toml").write_text('schema = 1\ncaching = "lfu"\nprefetcher = "stms"\n')
    (admin / "bad.toml").write_text('schema = 1\ncaching = "belady"\nprefetcher = "oracle"\n')
    assert c.load_profile("p", [vendor]).caching == "lru"
    prof = c.load_profile("p", [vendor, admin])
    assert (prof.caching, prof.prefetcher) == ("lfu", "stms")
    with pytest.raises(c.ConfigError) as ei:
        c.load_profile("bad", [admin])
    assert {k for k, _ in ei.value.problems} == {"caching", "prefetcher"}
    with pytest.raises(c.ConfigError, match="unknown profile 'zzz'"):
        c.load_profile("zzz", [vendor])


def test_shipped_profiles_and_default_config_are_valid():
    for name in c.list_profiles():
        c.load_profile(name)
    from pathlib import Path
    shipped = Path(__file__).resolve().parents[2] / "packaging" / "recmgd.toml"
    assert c.load(str(shipped)) == c.Config()  # the commented file states the defaults


def test_check_config_exit_codes(tmp_path, capsys):
    good = tmp_path / "good.toml"
    good.write_text("tick_ms = 100\n")
    assert recmgd.main(["--check-config", str(good)]) == 0
    bad = tmp_path / "bad.toml"
    bad.write_text("[budget]\nfast_mib_per_target = -1\n")
    assert recmgd.main(["--check-config", str(bad)]) == 78
    assert "budget.fast_mib_per_target: must be > 0" in capsys.readouterr().err
