"""Scheduling policies as the pure functions they are: FIFO gang packing, Tiresias, the goodput
policy, node planning and worker placement, on small hand-checked cases (no trace data)."""

import itertools
import math
import random
from dataclasses import replace

import pytest

from elastrain.scheduler import (
    BatchLimits,
    Cluster,
    FifoPacking,
    GoodputPolicy,
    GradientNoise,
    JobDemand,
    NodePool,
    ThroughputParams,
    Tiresias,
)
from elastrain.scheduler.nodes import plan_for_gains, plan_nodes
from elastrain.sim.placement import place

# One worker does one step per second at batch 100, and k workers k steps per second (no sync cost).
LINEAR = ThroughputParams(alpha_c=0.0, beta_c=0.01)
# Two steps per second on one worker; any second worker adds 1000 s of synchronisation per step.
NO_SCALING = ThroughputParams(alpha_c=0.5, beta_c=0.0, alpha_r=1000.0, alpha_n=1000.0)


def gang(job_id, seq, requested, current=0, low=1, high=16, attained=0.0, submitted=None):
    return JobDemand(job_id, seq, low, high, current=current, requested=requested, attained_s=attained,
                     submitted_s=float(seq) if submitted is None else submitted)


def measured(job_id, seq=0, speed=LINEAR, high=16, remaining=1000.0, current=0, **more):
    return JobDemand(job_id, seq, 1, high, current=current, batch_size=100, speed=speed, remaining=remaining, **more)


def used_slots(allocation, jobs):
    per_worker = {j.job_id: j.slots_per_worker for j in jobs}
    return sum(k * per_worker[job_id] for job_id, k in allocation.workers.items())


# --- FifoPacking(as_requested=True) ---------------------------------------------------------------

def test_fifo_gang_runs_each_job_at_exactly_its_requested_size_and_leaves_the_rest_idle():
    jobs = [gang("a", 1, 3), gang("b", 2, 2), gang("c", 3, 10, high=4), gang("d", 4, None, low=2)]
    allocation = FifoPacking(as_requested=True).allocate(0.0, Cluster.single(16), jobs)
    # requested 3 and 2 as asked; 10 is clamped to max 4; no request means the minimum (2).
    assert allocation.workers == {"a": 3, "b": 2, "c": 4, "d": 2}   # 5 of 16 slots stay idle


def test_fifo_gang_keeps_queue_order_so_a_job_that_does_not_fit_blocks_later_ones():
    jobs = [gang("c", 3, 1), gang("b", 2, 4), gang("a", 1, 2)]
    allocation = FifoPacking(as_requested=True).allocate(0.0, Cluster.single(5), jobs)
    assert allocation.workers == {"a": 2}   # b (4) does not fit the 3 left; c (1) would, but waits


def test_fifo_gang_stops_a_running_job_that_no_longer_fits_a_shrunken_cluster():
    policy = FifoPacking(as_requested=True)
    running = [gang("a", 1, 4, current=4), gang("b", 2, 2, current=2)]
    assert policy.allocate(0.0, Cluster.single(4), running).workers == {"a": 4}   # b is stopped
    # On 3 slots a no longer fits; b (2) still does and keeps running, and the queued c takes the last slot.
    jobs = [*running, gang("c", 3, 1)]
    assert policy.allocate(0.0, Cluster.single(3), jobs).workers == {"b": 2, "c": 1}


# --- Tiresias -------------------------------------------------------------------------------------

def test_tiresias_queue_is_high_below_the_attained_service_threshold_and_low_from_it_on():
    policy = Tiresias(threshold_s=100.0)
    assert policy.queue(0.0, gang("a", 1, 2, attained=99.9)) == 0
    assert policy.queue(0.0, gang("a", 1, 2, attained=100.0)) == 1
    assert policy.queue(1e9, gang("a", 1, 2, attained=100.0)) == 1   # no promotion without a starvation factor


def test_tiresias_a_low_attained_job_preempts_a_high_attained_running_one():
    old = gang("old", 1, 4, current=4, attained=1000.0, submitted=0.0)
    new = gang("new", 2, 4, submitted=10.0)
    assert Tiresias(threshold_s=100.0).allocate(20.0, Cluster.single(4), [old, new]).workers == {"new": 4}
    # With room for both nothing is preempted.
    assert Tiresias(threshold_s=100.0).allocate(20.0, Cluster.single(8), [old, new]).workers == {"new": 4, "old": 4}


def test_tiresias_passes_over_a_job_that_does_not_fit_for_smaller_ones_behind_it():
    jobs = [gang("big", 1, 8), gang("mid", 2, 3), gang("small", 3, 1), gang("late", 4, 1)]
    # big (8) does not fit 4 slots; mid (3) and small (1) behind it do; late finds nothing left.
    assert Tiresias().allocate(0.0, Cluster.single(4), jobs).workers == {"mid": 3, "small": 1}


def test_tiresias_within_a_queue_the_earlier_arrival_goes_first():
    jobs = [gang("later", 1, 2, submitted=5.0), gang("earlier", 2, 3, submitted=0.0)]
    assert Tiresias().allocate(10.0, Cluster.single(4), jobs).workers == {"earlier": 3}


def test_tiresias_starvation_promotion_follows_the_waited_over_ran_arithmetic():
    policy = Tiresias(threshold_s=100.0, starvation_factor=2.0)
    # attained 400 worker-s on a gang of 4 -> ran 100 s; submitted at 0, so at time t it waited t - 100 s.
    starving = gang("s", 1, 4, attained=400.0, submitted=0.0)
    assert policy.queue(299.0, starving) == 1   # waited 199 < 2 * 100
    assert policy.queue(300.0, starving) == 0   # waited 200 >= 2 * 100: promoted
    running = gang("s", 1, 4, current=4, attained=400.0, submitted=0.0)
    assert policy.queue(1e6, running) == 1      # only waiting jobs are promoted
    # Promoted, it goes ahead of a low-queue job that arrived earlier and holds the cluster.
    holder = gang("holder", 0, 4, current=4, attained=500.0, submitted=-50.0)
    assert policy.allocate(300.0, Cluster.single(4), [holder, starving]).workers == {"s": 4}
    assert policy.allocate(299.0, Cluster.single(4), [holder, starving]).workers == {"holder": 4}


# --- GoodputPolicy --------------------------------------------------------------------------------

def test_goodput_gives_the_extra_slots_to_the_job_that_scales():
    """A (linear, 1 step/s per worker) and B (2 steps/s on one worker, never faster) on 4 slots:
    B's first worker is worth most per slot, every further slot is worth a step/s only to A."""
    jobs = [measured("A", speed=LINEAR), measured("B", speed=NO_SCALING)]
    allocation = GoodputPolicy(restart_penalty_s=0.0).allocate(0.0, Cluster.single(4), jobs)
    assert allocation.workers == {"A": 3, "B": 1}


def test_goodput_with_equal_speed_the_job_with_less_work_left_gets_the_only_slot():
    for short_first in (True, False):
        short = measured("z-short", seq=1 if short_first else 2, remaining=100.0)
        long = measured("a-long", seq=2 if short_first else 1, remaining=1000.0)
        allocation = GoodputPolicy().allocate(0.0, Cluster.single(1), [long, short])
        assert allocation.workers == {"z-short": 1}


def test_goodput_batch_size_stays_in_limits_and_grows_with_workers_when_noise_makes_large_batches_efficient():
    speed = ThroughputParams(alpha_c=0.01, beta_c=0.001, alpha_r=0.005, beta_r=0.001, alpha_n=0.02, beta_n=0.002)
    limits = BatchLimits(initial=32, maximum=1024, max_local=128, min_local=4)
    policy = GoodputPolicy()
    noisy = JobDemand("a", 1, 1, 16, batch_size=32, batch=limits, speed=speed, noise=GradientNoise(1.0, 16.0),
                      remaining=1e5)
    batches = policy.curve(noisy, 4).batches[1:]
    assert all(limits.initial <= b <= limits.maximum for b in batches)
    assert all(b1 <= b2 for b1, b2 in itertools.pairwise(batches))   # never shrinks with workers
    assert batches[-1] >= 4 * batches[0] and batches[0] > limits.initial
    four_nodes = Cluster((NodePool("n", 4, 4, 4),))   # the curve above was for 4-slot nodes
    allocation = policy.allocate(0.0, four_nodes, [noisy])
    k = allocation.workers["a"]
    assert allocation.batch_size["a"] == batches[k - 1]
    assert limits.initial <= allocation.batch_size["a"] <= limits.maximum
    assert allocation.batch_size["a"] / k >= limits.min_local

    # No gradient noise: a larger batch gains nothing (gain 1) and only costs time -> the initial batch.
    quiet = JobDemand("a", 1, 1, 16, batch_size=32, batch=BatchLimits(32, 1024, 128), speed=speed,
                      noise=GradientNoise(1.0, 0.0), remaining=1e5)
    assert set(policy.curve(quiet, 4).batches[1:].tolist()) == {32}
    assert policy.allocate(0.0, four_nodes, [quiet]).batch_size["a"] == 32
    # ... unless min_local forces more: the smallest candidate (32, 40, 51, 64, ...) with >= 4 per worker.
    floor = JobDemand("a", 1, 1, 16, batch_size=32, batch=limits, speed=speed, noise=GradientNoise(1.0, 0.0),
                      remaining=1e5)
    assert policy.curve(floor, 4).batches[1:].tolist() == [32] * 8 + [40] * 2 + [51] * 2 + [64] * 4


def random_jobs(seed: int, count: int = 30) -> list[JobDemand]:
    rng = random.Random(seed)
    jobs = []
    for i in range(count):
        low = rng.choice([1, 1, 1, 2, 3])
        speed = None if rng.random() < 0.2 else ThroughputParams(
            alpha_c=rng.uniform(0.0, 0.1), beta_c=rng.uniform(1e-4, 1e-2), alpha_r=rng.uniform(0.0, 0.2),
            beta_r=rng.uniform(0.0, 0.05), alpha_n=rng.uniform(0.0, 0.5), beta_n=rng.uniform(0.0, 0.1),
            gamma=rng.uniform(1.0, 3.0))
        initial = rng.choice([16, 32, 128])
        batch = BatchLimits(initial, initial * rng.choice([1, 4, 16]), initial * 2) if rng.random() < 0.5 else None
        noise = GradientNoise(rng.uniform(0.0, 2.0), rng.uniform(0.0, 50.0)) if rng.random() < 0.7 else None
        jobs.append(JobDemand(
            f"j{i}", i, low, low + rng.randrange(0, 20), slots_per_worker=rng.choice([0.5, 1.0, 1.0, 2.0]),
            current=rng.choice([0, 0, low, low + 1]), requested=low, submitted_s=float(i), batch_size=initial,
            batch=batch, speed=speed, max_workers_seen=rng.choice([0, 1, 2, 4]), noise=noise,
            remaining=None if rng.random() < 0.2 else rng.uniform(10.0, 1e5)))
    return jobs


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_goodput_never_allocates_more_slots_than_the_cluster_has_nor_outside_a_jobs_range(seed):
    cluster = Cluster((NodePool("small", 4, 3, 3), NodePool("large", 8, 2, 2)))   # 28 slots
    jobs = random_jobs(seed)
    allocation = GoodputPolicy().allocate(0.0, cluster, jobs)
    assert used_slots(allocation, jobs) <= cluster.slots + 1e-9
    assert used_slots(allocation, jobs) >= cluster.slots - 2   # 30 jobs want more than 28 slots: little is idle
    by_id = {j.job_id: j for j in jobs}
    for job_id, k in allocation.workers.items():
        assert by_id[job_id].min_workers <= k <= by_id[job_id].max_workers
    assert set(allocation.batch_size) <= set(allocation.workers)


def test_goodput_is_deterministic():
    jobs = random_jobs(7)
    cluster = Cluster((NodePool("small", 4, 3, 3), NodePool("large", 8, 2, 2)))
    first = GoodputPolicy().allocate(5.0, cluster, jobs)
    assert GoodputPolicy().allocate(5.0, cluster, jobs) == first
    assert GoodputPolicy().allocate(5.0, cluster, list(reversed(jobs))) == first


def test_goodput_runs_an_unmeasured_job_on_one_worker_or_its_minimum():
    unmeasured = JobDemand("new", 1, 1, 8, batch_size=64)
    allocation = GoodputPolicy().allocate(0.0, Cluster.single(8), [unmeasured])
    assert allocation.workers == {"new": 1} and allocation.batch_size == {"new": 64}
    at_least_two = JobDemand("new", 1, 2, 8, batch_size=64)
    assert GoodputPolicy().allocate(0.0, Cluster.single(8), [at_least_two]).workers == {"new": 2}


@pytest.mark.parametrize(("seen", "growth", "cap"), [(2, 2.0, 4), (3, 1.5, 5), (1, 2.0, 2), (5, 4.0, 16)])
def test_goodput_grows_a_job_to_at_most_ceil_growth_times_the_most_workers_seen(seen, growth, cap):
    job = measured("a", high=16, max_workers_seen=seen)   # linear: every worker is worth having
    allocation = GoodputPolicy(growth=growth, restart_penalty_s=0.0).allocate(0.0, Cluster.single(32), [job])
    assert allocation.workers == {"a": cap}
    assert cap == min(16, math.ceil(growth * seen))


SPOT = NodePool("spot", 4, 0, 3, price_per_hour=1.0, spot=True)
ON_DEMAND = NodePool("on-demand", 4, 0, 10, price_per_hour=3.0)


def test_goodput_rents_spot_nodes_first_then_on_demand():
    eight = [measured("a", high=8)]    # linear: all 8 workers add a full speedup each
    twenty = [measured("a", high=20)]
    assert GoodputPolicy().allocate(0.0, Cluster((ON_DEMAND, SPOT)), eight).nodes == {"spot": 2, "on-demand": 0}
    # 20 slots: the 3 spot nodes on offer (12 slots), then 2 on-demand nodes for the other 8.
    assert GoodputPolicy().allocate(0.0, Cluster((ON_DEMAND, SPOT)), twenty).nodes == {"spot": 3, "on-demand": 2}


def test_goodput_rents_only_slots_that_add_speedup():
    # A job that does not scale is worth one slot: one spot node.
    job = [measured("b", speed=NO_SCALING, high=20)]
    assert GoodputPolicy().allocate(0.0, Cluster((ON_DEMAND, SPOT)), job).nodes == {"spot": 1, "on-demand": 0}


def test_goodput_node_request_respects_the_budget_and_the_clusters_node_limit():
    twenty = [measured("a", high=20)]
    # 5/h buys the 3 spot nodes (3/h); an on-demand node (3/h) would exceed it.
    within_budget = GoodputPolicy(budget_per_hour=5.0).allocate(0.0, Cluster((ON_DEMAND, SPOT)), twenty)
    assert within_budget.nodes == {"spot": 3, "on-demand": 0}
    capped = GoodputPolicy().allocate(0.0, Cluster((ON_DEMAND, SPOT), max_nodes=4), twenty)
    assert capped.nodes == {"spot": 3, "on-demand": 1}


# A second worker makes 1.4x (a gain of 0.4 for its slot): the step falls from 1 s to 0.5 s of
# compute + 0.214 s of synchronisation; a third would add 10 s of synchronisation (the same within
# a node and across nodes: the pools below have one slot per node).
SUBLINEAR = ThroughputParams(alpha_c=0.0, beta_c=0.01, alpha_r=1 / 1.4 - 0.5, beta_r=10.0, alpha_n=1 / 1.4 - 0.5,
                             beta_n=10.0)
SPOT_SLOT = NodePool("spot", 1, 0, 10, price_per_hour=1.0, spot=True)
ON_DEMAND_SLOT = NodePool("on-demand", 1, 0, 10, price_per_hour=3.0)


def test_goodput_rents_cheap_capacity_for_smaller_gains_than_dear_capacity():
    job = [measured("a", speed=SUBLINEAR, high=4)]
    policy = GoodputPolicy(min_speedup_per_slot=0.5)
    # On-demand only: the second slot's 0.4 is below 0.5, so one node.
    assert policy.allocate(0.0, Cluster((ON_DEMAND_SLOT,)), job).nodes == {"on-demand": 1}
    # Spot at a third of the price needs only 0.5 / 3: both slots are worth it there.
    assert policy.allocate(0.0, Cluster((ON_DEMAND_SLOT, SPOT_SLOT)), job).nodes == {"on-demand": 0, "spot": 2}
    # One spot node on offer: the second slot is not worth an on-demand node.
    one_spot = replace(SPOT_SLOT, max_nodes=1)
    assert policy.allocate(0.0, Cluster((ON_DEMAND_SLOT, one_spot)), job).nodes == {"on-demand": 0, "spot": 1}
    # Asking less than 0.4 per on-demand slot: on-demand rents it too.
    generous = GoodputPolicy(min_speedup_per_slot=0.35)
    assert generous.allocate(0.0, Cluster((ON_DEMAND_SLOT, one_spot)), job).nodes == {"on-demand": 1, "spot": 1}


def test_goodput_on_a_fixed_cluster_keeps_the_nodes_held():
    fixed = Cluster((NodePool("local", 4, 2, 2),))
    busy = [measured("a", high=20), measured("b", high=20)]
    # Wanting more than the cluster can ever have: the request is what is held.
    assert GoodputPolicy().allocate(0.0, fixed, busy).nodes == {"local": 2}
    # Not autoscaling, it asks for exactly the held nodes whatever the jobs want, even when idle.
    priced = Cluster((NodePool("spot", 4, 2, 5, price_per_hour=1.0, spot=True), NodePool("od", 4, 1, 5, 3.0)))
    for cluster in (fixed, priced):
        for jobs in ([], busy):
            assert GoodputPolicy(autoscale=False).allocate(0.0, cluster, jobs).nodes == cluster.held_nodes()


# --- plan_nodes -----------------------------------------------------------------------------------

CHEAP = NodePool("cheap", 4, 0, 2, price_per_hour=1.0, spot=True)      # 0.25 per slot
BIG = NodePool("big", 8, 0, 5, price_per_hour=4.0)                     # 0.50 per slot
DEAR = NodePool("dear", 4, 0, 5, price_per_hour=3.0)                   # 0.75 per slot


def test_plan_nodes_takes_the_cheapest_slots_first():
    # 10 slots: both cheap nodes (8), then one big node for the last 2; nothing from dear.
    assert plan_nodes([DEAR, BIG, CHEAP], 10) == {"dear": 0, "big": 1, "cheap": 2}
    assert plan_nodes([DEAR, BIG, CHEAP], 0) == {"dear": 0, "big": 0, "cheap": 0}
    # Equal price per slot: spot first.
    od = NodePool("od", 4, 0, 5, price_per_hour=1.0)
    assert plan_nodes([od, CHEAP], 4) == {"od": 0, "cheap": 1}


def test_plan_nodes_caps_the_node_count():
    assert plan_nodes([DEAR, BIG, CHEAP], 10, max_nodes=1) == {"dear": 0, "big": 0, "cheap": 1}
    assert plan_nodes([DEAR, BIG, CHEAP], 100, max_nodes=4) == {"dear": 0, "big": 2, "cheap": 2}


def test_plan_nodes_stays_within_the_budget():
    # 2.5/h: the two cheap nodes (2/h); nothing else is affordable with the 0.5/h left.
    assert plan_nodes([DEAR, BIG, CHEAP], 20, budget_per_hour=2.5) == {"dear": 0, "big": 0, "cheap": 2}
    # 7/h: two cheap (2/h), one big (4/h); 1/h left buys no dear node.
    assert plan_nodes([DEAR, BIG, CHEAP], 40, budget_per_hour=7.0) == {"dear": 0, "big": 1, "cheap": 2}


def test_plan_for_gains_rents_each_pool_for_the_gains_worth_its_price():
    gains = [(1.0, 4), (0.7, 8), (0.4, 8), (0.2, 8)]
    # Thresholds at 0.9 for the dearest (0.75 per slot): cheap 0.3, big 0.6, dear 0.9. Cheap is
    # worth 20 slots but offers 2 nodes (8); big covers the rest of the 12 worth >= 0.6 with one
    # node; the 4 slots worth >= 0.9 are covered already.
    assert plan_for_gains([DEAR, BIG, CHEAP], gains, 0.9) == {"dear": 0, "big": 1, "cheap": 2}
    no_cheap = replace(CHEAP, max_nodes=0)
    assert plan_for_gains([DEAR, BIG, no_cheap], gains, 0.9) == {"dear": 0, "big": 2, "cheap": 0}
    assert plan_for_gains([DEAR, no_cheap], gains, 0.9) == {"dear": 1, "cheap": 0}
    # A threshold of 0 rents every slot that adds anything, cheapest first.
    assert plan_for_gains([DEAR, BIG, CHEAP], gains, 0.0) == {"dear": 0, "big": 3, "cheap": 2}


# --- placement ------------------------------------------------------------------------------------

def test_place_keeps_jobs_that_keep_their_size_where_they_are():
    current = {"a": {0: 1, 2: 1}, "b": {1: 3}}
    assert place([4, 4, 4], current, {"a": 2, "b": 3}) == current


def test_place_puts_a_four_worker_job_on_one_whole_free_node():
    placed = place([4, 4, 4], {"a": {0: 2}}, {"a": 2, "b": 4})
    assert placed == {"a": {0: 2}, "b": {1: 4}}


def test_place_fills_the_tightest_node_that_fits_and_moves_jobs_off_lost_nodes():
    # c (2) fits node 0 (3 free) and node 2 (4 free): the tightest, node 0.
    assert place([4, 4, 4], {"a": {0: 1}, "b": {1: 3}}, {"a": 1, "b": 3, "c": 2})["c"] == {0: 2}
    # Node 1 is gone: b moves to a node that is still held.
    assert place([4, 0, 4], {"b": {1: 3}}, {"b": 3}) == {"b": {0: 3}}


def test_place_gives_nothing_to_a_job_that_cannot_fit():
    placed = place([4, 4], {"a": {0: 4}, "b": {1: 3}}, {"a": 4, "b": 3, "c": 2, "d": 0})
    assert placed == {"a": {0: 4}, "b": {1: 3}}


@pytest.mark.parametrize("seed", range(5))
def test_place_never_puts_more_workers_on_a_node_than_it_has_slots(seed):
    rng = random.Random(seed)
    capacity = [rng.choice([0, 4, 4, 8]) for _ in range(6)]
    current, wanted = {}, {}
    free = list(capacity)
    for i in range(12):
        name = f"j{i}"
        node = rng.randrange(len(capacity))
        if free[node] and rng.random() < 0.5:
            used = rng.randint(1, free[node])
            current[name] = {node: used}
            free[node] -= used
        wanted[name] = rng.choice([0, 1, 2, 3, 4, 6, 8])
    placed = place(capacity, current, wanted)
    load = [0] * len(capacity)
    for name, spots in placed.items():
        assert sum(spots.values()) == wanted[name] and all(c > 0 for c in spots.values())
        for node, count in spots.items():
            load[node] += count
    assert all(used <= cap for used, cap in zip(load, capacity, strict=True))
