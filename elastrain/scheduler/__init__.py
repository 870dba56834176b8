"""Scheduling policies: pure functions from (cluster, jobs) to an allocation of workers."""

from elastrain.scheduler.policy import Allocation, Cluster, FifoPacking, JobDemand, Policy

__all__ = ["Allocation", "Cluster", "FifoPacking", "JobDemand", "Policy"]
