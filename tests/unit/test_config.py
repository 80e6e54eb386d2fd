"""recmgd.toml parsing: defaults, every error with its key path, profiles."""

import pytest

from recmg.cli import recmgd
from recmg import config as c


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
    assert "budget.fast_mib_per_target: must be in 1..2^30" in capsys.readouterr().err


@pytest.mark.parametrize("text,key", [
    ("[migration]\nrate_mib_s = inf\n", "migration.rate_mib_s"),
    ("[migration]\nsimulated_slow_ns = nan\n", "migration.simulated_slow_ns"),
    ("[migration]\ntick_deadline_ms = 100000000000\n", "migration.tick_deadline_ms"),
    ("[tiers]\nfast_nodes = [40000]\n", "tiers.fast_nodes"),
    ("[tiers]\nfast_nodes = [0]\nslow_nodes = [0]\n", "tiers"),
    ("[control]\nmax_requests_per_s = 0.5\n", "control.max_requests_per_s"),
    ("[target]\npids = [-1]\n", "target.pids"),
    ("[migration]\nsimulated_slow_ns = 10.0\nsimulated_fast_ns = 20.0\n",
     "migration.simulated_slow_ns"),
])
def test_values_that_would_fail_at_runtime_are_refused(text, key):
    with pytest.raises(c.ConfigError) as ei:
        c.parse(text)
    assert key in [k for k, _ in ei.value.problems]


def test_non_utf8_and_deeply_nested_files_are_config_errors(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"tick_ms = 100\n# \xff\xfe\n")
    assert recmgd.main(["--check-config", str(bad)]) == 78
    assert "not UTF-8 at byte" in capsys.readouterr().err
    bad.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    assert recmgd.main(["--check-config", str(bad)]) == 78
    err = capsys.readouterr().err
    assert "(syntax)" in err and "Traceback" not in err


def test_check_host_names_what_this_host_lacks(tmp_path):
    import socket

    afile = tmp_path / "file"
    afile.write_text("")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        cfg = c.parse(f'shm_dir = "{afile}"\n[tiers]\nslow_nodes = [7]\n'
                      f'[control]\nread_group = "no-such-group-recmg"\n'
                      f'[metrics]\nhttp_port = {port}\n')
        problems = dict(c.check_host(cfg, [0]))
    assert "do not exist on this host" in problems["tiers.slow_nodes"]
    assert "not a directory" in problems["shm_dir"]
    assert "no group" in problems["control.read_group"]
    assert "cannot listen" in problems["metrics.http_port"]
    assert c.check_host(c.parse(""), [0]) == []


def test_check_config_says_what_it_checked(tmp_path, capsys):
    p = tmp_path / "ok.toml"
    p.write_text("tick_ms = 100\n")
    assert recmgd.main(["--check-config", str(p)]) == 0
    out = capsys.readouterr().out
    assert "checked:" in out and "NUMA nodes" in out


def test_a_profile_cannot_rename_itself(tmp_path):
    (tmp_path / "sneaky.toml").write_text('schema = 1\nname = "default"\ncaching = "lru"\n')
    with pytest.raises(c.ConfigError) as ei:
        c.load_profile("sneaky", [tmp_path])
    assert "name" in [k for k, _ in ei.value.problems]


def test_prefetch_candidates_must_be_0_to_2_24(tmp_path):
    (tmp_path / "neg.toml").write_text('schema = 1\nprefetch_candidates = -1\n')
    (tmp_path / "big.toml").write_text('schema = 1\nprefetch_candidates = 16777217\n')
    (tmp_path / "ok.toml").write_text('schema = 1\nprefetch_candidates = 64\n')
    for bad in ("neg", "big"):
        with pytest.raises(c.ConfigError) as ei:
            c.load_profile(bad, [tmp_path])
        assert "prefetch_candidates" in [k for k, _ in ei.value.problems]
    assert c.load_profile("ok", [tmp_path]).prefetch_candidates == 64


def test_a_profile_sets_its_own_sampling_limit_or_takes_the_targets(tmp_path):
    from recmg import config as cfgmod

    cfg = cfgmod.parse("[target]\nmax_accesses_per_s = 3000000.0\n")
    (tmp_path / "own.toml").write_text('schema = 1\ncaching = "lru"\nmax_accesses_per_s = 800000.0\n')
    (tmp_path / "none.toml").write_text('schema = 1\ncaching = "lru"\n')
    (tmp_path / "bad.toml").write_text('schema = 1\ncaching = "lru"\nmax_accesses_per_s = -5.0\n')
    assert cfgmod.sampling_limit(cfg, cfgmod.load_profile("own", [tmp_path])) == 800_000
    assert cfgmod.sampling_limit(cfg, cfgmod.load_profile("none", [tmp_path])) == 3_000_000
    # the lower limit applies, and the operator's 0 turns sampling off whatever the
    # profile says (benches and tests that measure the full ingest rely on it)
    low = cfgmod.parse("[target]\nmax_accesses_per_s = 500000.0\n")
    off = cfgmod.parse("[target]\nmax_accesses_per_s = 0\n")
    assert cfgmod.sampling_limit(low, cfgmod.load_profile("own", [tmp_path])) == 500_000
    assert cfgmod.sampling_limit(off, cfgmod.load_profile("own", [tmp_path])) == 0
    (tmp_path / "never.toml").write_text('schema = 1\ncaching = "lru"\nmax_accesses_per_s = 0\n')
    assert cfgmod.sampling_limit(cfg, cfgmod.load_profile("never", [tmp_path])) == 0
    # the shipped profiles sample below recmgd's default limit, the learned ones earlier
    base = cfgmod.parse("")
    assert cfgmod.sampling_limit(base, cfgmod.load_profile("default")) == 500_000
    assert cfgmod.sampling_limit(base, cfgmod.load_profile("learned")) == 500_000
    with pytest.raises(cfgmod.ConfigError, match="max_accesses_per_s: must be in 0..1e12"):
        cfgmod.load_profile("bad", [tmp_path])
