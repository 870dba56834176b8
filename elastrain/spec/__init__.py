"""The job specification: pydantic models, YAML loading, validation errors a person can act on."""

from elastrain.spec.load import apply_overrides, load_spec, parse_spec, validate_spec
from elastrain.spec.models import (
    CheckpointSpec,
    CnnModelSpec,
    ColumnSpec,
    CsvSpec,
    DataSpec,
    JobSpec,
    LinearModelSpec,
    MlpModelSpec,
    ModelSpec,
    PluginModelSpec,
    PythonModelSpec,
    ResourcesSpec,
    ScheduleSpec,
    ShardManifest,
    SvmModelSpec,
    SyntheticSpec,
    TextModelSpec,
    TextSpec,
    TrainSpec,
    TreeModelSpec,
    WorkersSpec,
    parse_model_spec,
)

__all__ = [
    "CheckpointSpec", "CnnModelSpec", "ColumnSpec", "CsvSpec", "DataSpec", "JobSpec", "LinearModelSpec", "MlpModelSpec",
    "ModelSpec", "PluginModelSpec", "PythonModelSpec", "ResourcesSpec", "ScheduleSpec", "ShardManifest", "SvmModelSpec",
    "SyntheticSpec", "TextModelSpec", "TextSpec", "TrainSpec", "TreeModelSpec", "WorkersSpec",
    "apply_overrides", "load_spec",
    "parse_model_spec", "parse_spec", "validate_spec",
]
