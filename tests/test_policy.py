"""The first scheduling policy, as the pure function it is."""

from elastrain.scheduler import Cluster, FifoPacking, JobDemand


def demand(job_id, seq, low, high, cpus=1.0, current=0):
    return JobDemand(job_id, seq, low, high, cpus, current)


def test_queued_jobs_start_in_order_and_spare_capacity_tops_up_the_oldest():
    jobs = [demand("b", 2, 2, 4), demand("a", 1, 1, 3), demand("c", 3, 2, 2)]
    # Minimums first (a 1, b 2, c 2), then the 3 spare CPUs go to a (up to its max 3), then b.
    assert FifoPacking().allocate(0.0, Cluster.single(8), jobs).workers == {"a": 3, "b": 3, "c": 2}


def test_a_job_that_does_not_fit_holds_the_queue_and_running_jobs_keep_their_minimum():
    jobs = [demand("run", 1, 2, 4, current=4), demand("big", 2, 4, 4), demand("small", 3, 1, 1)]
    allocation = FifoPacking().allocate(0.0, Cluster.single(5), jobs)
    assert allocation.workers == {"run": 4}   # big waits; small may not jump ahead of it
    assert "small" not in allocation.workers


def test_fractional_cpus_pack_and_no_capacity_means_nothing_starts():
    jobs = [demand("a", 1, 1, 3, cpus=0.5), demand("b", 2, 1, 2, 0.5)]
    allocation = FifoPacking().allocate(0.0, Cluster.single(2), jobs)
    assert allocation.workers == {"a": 3, "b": 1}
    assert FifoPacking().allocate(0.0, Cluster.single(0), [demand("a", 1, 1, 1)]).workers == {}
