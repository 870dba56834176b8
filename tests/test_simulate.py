"""`elastrain simulate` on the real Pollux and spot traces, and the spot and prices loaders."""

import itertools
import json

import pytest
from conftest import REPO, TRACES

from elastrain.errors import UserError
from elastrain.scheduler import Allocation, Cluster, NodePool
from elastrain.scheduler.nodes import FixedSize
from elastrain.sim.spot import Availability, Prices, load_availability, load_prices

POLLUX = TRACES / "pollux"
ZONES = TRACES / "spot" / "availability" / "16-node" / "aws-08-27-2023"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def traces():
    """The Pollux traces."""
    return POLLUX


@pytest.fixture
def workload(traces, tmp_path):
    """The first 20 submissions of workload-1."""
    lines = (traces / "workloads" / "workload-1.csv").read_text().splitlines()[:21]
    path = tmp_path / "w20.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def simulate(cli, workload, out, *extra):
    return cli("simulate", "--workload", workload, "--apps", POLLUX / "traces", "--out", out, *extra)


def test_a_short_run_writes_a_summary_and_plots(cli, workload, tmp_path):
    out = tmp_path / "out"
    code, stdout, _ = simulate(cli, workload, out, "--policy", "fifo,tiresias", "--json")
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert json.loads(stdout) == summary
    assert list(summary["policies"]) == ["fifo", "tiresias"]
    assert summary["config"]["jobs"] == 20 and summary["config"]["spot"] is None
    for result in summary["policies"].values():
        assert {"mean_jct_s", "median_jct_s", "p99_jct_s", "makespan_s", "cost_usd", "unfinished"} <= set(result)
        assert result["unfinished"] == 0 and len(result["jobs"]) == 20
        assert 0 < result["median_jct_s"] <= result["p99_jct_s"] <= result["makespan_s"]
        assert result["cost_usd"] > 0
        timeline = result["timeline"]   # what the dashboard charts: the rounds where the allocation changed
        assert timeline[0]["t"] == 0 and timeline[-1]["cost_usd"] == pytest.approx(result["cost_usd"])
        assert all((a["gpus_used"], a["nodes"]) != (b["gpus_used"], b["nodes"])
                   for a, b in itertools.pairwise(timeline[:-1]))
        assert max(row["gpus_used"] for row in timeline) > 0 and all(row["nodes"] for row in timeline)
    for name in ("jct_cdf.png", "allocation.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 1000
    # A fixed cluster: a flat node count and cost lines all alike would say nothing.
    assert not (out / "nodes.png").exists() and not (out / "cost.png").exists()


def test_spot_nodes_make_the_same_workload_cheaper(cli, workload, tmp_path):
    code, _, _ = simulate(cli, workload, tmp_path / "on-demand", "--policy", "fifo")
    assert code == 0
    zones = [arg for path in sorted(ZONES.glob("*.json")) for arg in ("--spot", path)]
    code, table, _ = simulate(cli, workload, tmp_path / "spot", "--policy", "fifo", *zones,
                              "--prices", REPO / "examples" / "prices.yaml")
    assert code == 0 and "fifo" in table and "cost USD" in table
    assert (tmp_path / "spot" / "nodes.png").read_bytes().startswith(PNG)
    assert (tmp_path / "spot" / "cost.png").read_bytes().startswith(PNG)
    on_demand = json.loads((tmp_path / "on-demand" / "summary.json").read_text())["policies"]["fifo"]
    spot = json.loads((tmp_path / "spot" / "summary.json").read_text())["policies"]["fifo"]
    assert spot["unfinished"] == 0 and spot["cost_usd"] < 0.7 * on_demand["cost_usd"]


@pytest.mark.parametrize(("case", "message"), [
    ("missing workload", "trace file not found"),
    ("unknown policy", "unknown policy 'sjf'"),
    ("unknown app", "no measurements for application(s) resnet"),
    ("malformed prices", "not valid YAML"),
    ("negative price", "spot_per_hour must be a number >= 0"),
    ("malformed spot", "not valid JSON"),
    ("spot without data", "data is not a non-empty list"),
    ("no nodes", "--nodes must be > 0"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(cli, workload, tmp_path, case, message):
    bad_workload = tmp_path / "bad.csv"
    bad_workload.write_text(workload.read_text() + "resnet-99,3000,resnet,1,64\n")
    (tmp_path / "broken.yaml").write_text("on_demand_per_hour: [3.06\n")
    (tmp_path / "negative.yaml").write_text("spot_per_hour: -1\n")
    (tmp_path / "broken.json").write_text('{"metadata": {"gap_seconds": 300}, "data": [1, 2')
    (tmp_path / "empty.json").write_text('{"metadata": {"gap_seconds": 300}, "data": []}')
    args = {
        "missing workload": ["--workload", tmp_path / "nope.csv"],
        "unknown policy": ["--policy", "fifo,sjf"],
        "unknown app": ["--workload", bad_workload],
        "malformed prices": ["--prices", tmp_path / "broken.yaml"],
        "negative price": ["--prices", tmp_path / "negative.yaml"],
        "malformed spot": ["--spot", tmp_path / "broken.json"],
        "spot without data": ["--spot", tmp_path / "empty.json"],
        "no nodes": ["--nodes", "0"],
    }[case]
    out = tmp_path / "out"
    code, stdout, stderr = cli("simulate", "--workload", workload, "--apps", POLLUX / "traces", "--out", out, *args)
    assert code == 2 and stdout == ""
    assert len(stderr.strip().splitlines()) == 1 and message in stderr
    assert not out.exists()


def test_availability_is_a_step_function_summed_over_zones_that_wraps_around(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"metadata": {"gap_seconds": 300}, "data": [0, 3, 5]}))
    (tmp_path / "b.json").write_text(json.dumps({"metadata": {"gap_seconds": 600}, "data": [1, 2]}))
    one = load_availability([tmp_path / "a.json"])
    assert [one(t) for t in (0, 299.9, 300, 899, 900, 1200)] == [0, 0, 3, 5, 0, 3]
    assert one.duration_s == 900
    both = load_availability([tmp_path / "a.json", tmp_path / "b.json"])
    assert [both(t) for t in (0, 300, 600, 900, 1200)] == [1, 4, 7, 2, 4]
    assert load_availability([tmp_path / "a.json"], start_s=300)(0) == 3
    assert Availability(((60.0, (2,)),))(1e9) == 2


def test_prices_default_to_the_readme_and_a_file_overrides_them(tmp_path):
    assert load_prices(None) == Prices(3.06, 1.05) == load_prices(REPO / "examples" / "prices.yaml")
    (tmp_path / "p.yaml").write_text("spot_per_hour: 0.9\n")
    assert load_prices(tmp_path / "p.yaml") == Prices(3.06, 0.9)
    (tmp_path / "typo.yaml").write_text("spot_price: 0.9\n")
    with pytest.raises(UserError, match="unknown key"):
        load_prices(tmp_path / "typo.yaml")


def test_a_fixed_size_cluster_takes_spot_first_and_on_demand_for_the_rest():
    class Keep:
        def allocate(self, now, cluster, jobs):
            return Allocation({"a": 2}, nodes=cluster.held_nodes())

    cluster = Cluster((NodePool("spot", 4, 2, 3, 1.05, spot=True), NodePool("on-demand", 4, 8, 10, 3.06)))
    decision = FixedSize(Keep(), 10).allocate(0.0, cluster, [])
    assert decision.workers == {"a": 2} and decision.nodes == {"spot": 3, "on-demand": 7}
