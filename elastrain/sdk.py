"""The Python API: declare a job once, train it, load the model it saved.

    import elastrain

    job = elastrain.Job.from_yaml("examples/demo.yaml", overrides={"train.epochs": 2})
    result = job.run()                        # blocks; an elastrain.JobResult
    model = elastrain.load_model(result.model_path)
    model.predict([{"a": 1.0, "b": "red"}])   # raw rows: the saved preprocessing is applied
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from elastrain import paths
from elastrain.elastic import JobResult, RunOptions, parse_chaos, run_job
from elastrain.spec import JobSpec, apply_overrides, load_spec, validate_spec

Overrides = Mapping[str, Any] | Sequence[str] | None


class Job:
    """A training job, validated when it is made.

    Args:
        spec: the spec as a dict (the YAML's shape) or a JobSpec.
        overrides: fields to set, by dotted path: {"train.lr": 0.01} or ["train.lr=0.01"]
            (values of the string form are read as YAML, as `--set` reads them).

    Raises:
        UserError: the spec is not valid (the message names the field and how to fix it).
    """

    def __init__(self, spec: Mapping[str, Any] | JobSpec, overrides: Overrides = None) -> None:
        raw = spec.model_dump(mode="json") if isinstance(spec, JobSpec) else copy.deepcopy(dict(spec))
        overridden = apply_overrides(raw, _override_strings(overrides))
        self.spec: JobSpec = validate_spec(raw, source="elastrain.Job", overridden=overridden)
        self.code_paths: list[str] = []   # folders a `python:module:function` model is imported from

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Overrides = None) -> Job:
        """The job a YAML spec declares; relative data paths and `python:` models are found
        beside the file, as `elastrain run` finds them.

        Raises:
            UserError: the file is missing, not YAML, or not a valid spec.
        """
        job = cls(load_spec(path, _override_strings(overrides)))
        job.code_paths = [str(Path(path).resolve().parent)]
        return job

    def run(self, chaos: str | None = None, home: str | Path | None = None) -> JobResult:
        """Train to the end in this process (on Ray workers when `resources.workers.max` > 1),
        save the model and record the run under `home` (default $ELASTRAIN_HOME or ~/.elastrain).

        Args:
            chaos: fault injection, as `elastrain run --chaos` takes it.

        Returns:
            The result: status "succeeded", "failed" (the loss diverged; the last good state is
            saved) or "cancelled"; `model_path` is what :func:`load_model` takes.

        Raises:
            UserError: the data cannot be used, or too few workers could be started.
        """
        sys.path[:0] = [p for p in self.code_paths if p not in sys.path]
        options = RunOptions(chaos=parse_chaos(chaos), extra_paths=self.code_paths)
        return run_job(self.spec, Path(home) if home else paths.home(), options=options)


def _override_strings(overrides: Overrides) -> list[str]:
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):   # JSON is YAML: the values read back as given
        return [f"{key}={json.dumps(value)}" for key, value in overrides.items()]
    return list(overrides)
