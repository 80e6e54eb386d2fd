"""Boot the two-node guest from the host (marker `vm`): exit-status propagation, the
guest test suite, and HMAT memory tiers on a 6.12 kernel."""

import io
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

pytestmark = pytest.mark.vm
ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable


def boot(cmd, timeout=900, **kw):
    out = io.BytesIO()
    rc = harness.run(cmd, cwd=str(ROOT), out=out, timeout=timeout, **kw)
    return rc, out.getvalue().decode(errors="replace")


def boot_hmat_612(cmd, out_dir):
    """boot() on the 6.12 kernel with HMAT tiers (6.1 ignores HMAT for tiering and has
    no DAMON migrate actions), writable out_dir at $RECMG_VM_OUT."""
    k612 = sorted(Path("/boot").glob("vmlinuz-6.12*"))
    if not k612:
        pytest.skip("HMAT tiers need a 6.12 kernel (apt-get install linux-image-6.12-amd64)")
    return boot(["sh", "-c", cmd], kernel=str(k612[-1]), hmat=True, out_dir=str(out_dir))


def test_guest_exit_status_reaches_the_host():
    rc, console = boot(["sh", "-c", "echo inside; exit 3"])
    assert rc == 3 and "inside" in console, console[-3000:]


@pytest.mark.timeout(900)  # the boot's own limit: the suite takes 4-6 min under TCG
def test_guest_suite():
    rc, console = boot([PY, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:hypothesispytest",
                        "--color=no", "-m", "guest", "-v",
                        "tests/vm/test_guest.py", "tests/vm/test_guest_daemon.py"])
    print(console)
    assert rc == 0, console[-6000:]
    assert " passed" in console and "failed" not in console.split("===")[-2]


def test_hmat_makes_node_1_a_lower_memory_tier(tmp_path):
    rc, console = boot_hmat_612(f"{Path(PY).parent}/recmgctl check --json "
                                "> $RECMG_VM_OUT/check.json", tmp_path)
    assert rc == 0, console[-4000:]
    report = json.loads((tmp_path / "check.json").read_text())
    assert report["tier_basis"] == "memory tiers"
    assert (report["fast_nodes"], report["slow_nodes"]) == ([0], [1])
    tiers = {n["id"]: n["tier"] for n in report["nodes"]}
    assert tiers[1] > tiers[0]


def test_missing_command_and_timeout(tmp_path):
    rc, _ = boot(["/nonexistent/binary"])
    assert rc == 127
    rc, console = boot(["sleep", "600"], timeout=25)
    assert rc == 125


@pytest.mark.timeout(1500)
def test_tiering_bench_in_the_hmat_guest(tmp_path):
    """`recmg bench tiering`, short, with the contenders that each exercise one mechanism:
    the kernel's tiering, DAMON through damo, recmgd, and the unmanaged baseline."""
    rc, console = boot_hmat_612(f"{Path(PY).parent}/recmg bench tiering --batches 24 "
                                "--contenders slow,kernel,damon,recmgd-default "
                                "--out $RECMG_VM_OUT", tmp_path)
    assert rc == 0, console[-4000:]
    result = json.loads((tmp_path / "tiering.json").read_text())
    rows = {r["contender"]: r for r in result["rows"]}
    assert set(rows) == {"slow", "kernel", "damon", "recmgd-default", "OPT (bound)"}
    slow, kernel, damon, recmgd = (rows[n] for n in ("slow", "kernel", "damon",
                                                     "recmgd-default"))
    for r in (slow, kernel, damon, recmgd):
        assert r["batches"] == 24 and r["accesses"] == 24 * 256 * 4 * 8
        assert r["samples"] > 2
        # the budget held: node 0 had about the budget + its high watermark free
        assert r["node0_free_mib"] < result["budget_mib"] + 24
    # (nothing manages "slow"; its pages_migrated is the kernel's compaction, from 0 to
    # a few hundred in this short run and thousands in a long one: not asserted)
    assert slow["fast_share"] < 0.02
    hints = kernel["vmstat"]["numa_hint_faults"]
    if not hints:
        # the kernel's scanner did not start in this short run (seen once in six runs
        # under TCG, with 5.8 s of workload CPU): the condition is that it runs, so the
        # kernel contender gets a second, longer run of its own
        rc, console = boot_hmat_612(f"{Path(PY).parent}/recmg bench tiering --batches 60 "
                                    "--contenders kernel --out $RECMG_VM_OUT", tmp_path)
        assert rc == 0, console[-4000:]
        again = json.loads((tmp_path / "tiering.json").read_text())["rows"][0]
        assert again["contender"] == "kernel", again
        hints = again["vmstat"]["numa_hint_faults"]
    assert hints > 0  # the kernel's scanner ran
    assert damon["manager_cpu_s"] > 0  # kdamonds ran
    if recmgd["fast_share"] <= slow["fast_share"] + 0.1:
        # recmgd's ticks lag the workload under TCG: in 24 batches its share was 4.4% and
        # 4.7% in 2 of about 8 runs on a busy host, above 10% otherwise.  The condition is
        # that it brings the hot pages to DRAM, so it gets a second, longer run of its own
        # (as the kernel contender above)
        rc, console = boot_hmat_612(f"{Path(PY).parent}/recmg bench tiering --batches 60 "
                                    "--contenders recmgd-default --out $RECMG_VM_OUT", tmp_path)
        assert rc == 0, console[-4000:]
        again = json.loads((tmp_path / "tiering.json").read_text())
        assert again["budget_mib"] == result["budget_mib"], again
        recmgd = again["rows"][0]
        assert recmgd["contender"] == "recmgd-default", recmgd
    assert recmgd["recmgd"]["promoted"] > 0 and recmgd["fast_share"] > slow["fast_share"] + 0.1
    assert recmgd["table_mib_fast"] <= result["budget_mib"] + 1
    bound = rows["OPT (bound)"]["fast_share"]
    assert all(bound >= r["fast_share"] for r in (slow, kernel, damon))
