"""The trace-driven cluster simulator (issue 5; in progress): workloads and per-application
measurements in the Pollux artifact's formats."""

from elastrain.sim.traces import AppTrace, Submission, load_app, load_apps, load_workload

__all__ = ["AppTrace", "Submission", "load_app", "load_apps", "load_workload"]
