"""The job specification: pydantic models, YAML loading, validation errors a person can act on."""

from elastrain.spec.load import apply_overrides, load_spec, parse_spec, validate_spec
from elastrain.spec.models import (
    CheckpointSpec,
    CsvSpec,
    DataSpec,
    JobSpec,
    ModelSpec,
    ResourcesSpec,
    ScheduleSpec,
    SyntheticSpec,
    TrainSpec,
    WorkersSpec,
)

__all__ = [
    "CheckpointSpec", "CsvSpec", "DataSpec", "JobSpec", "ModelSpec", "ResourcesSpec", "ScheduleSpec",
    "SyntheticSpec", "TrainSpec", "WorkersSpec", "apply_overrides", "load_spec", "parse_spec",
    "validate_spec",
]
