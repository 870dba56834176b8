"""Scheduling policies: pure functions from (time, cluster, jobs) to an allocation of workers,
batch sizes and nodes to rent."""

from elastrain.scheduler.efficiency import GradientNoise
from elastrain.scheduler.goodput import GoodputPolicy
from elastrain.scheduler.policy import FifoPacking, Policy
from elastrain.scheduler.throughput import StepObservation, ThroughputParams, fit_throughput
from elastrain.scheduler.tiresias import Tiresias
from elastrain.scheduler.types import Allocation, BatchLimits, Cluster, JobDemand, NodePool

__all__ = ["Allocation", "BatchLimits", "Cluster", "FifoPacking", "GoodputPolicy", "GradientNoise", "JobDemand",
           "NodePool", "Policy", "StepObservation", "ThroughputParams", "Tiresias", "fit_throughput"]
