"""The `tune:` section of a spec: a hyperparameter search over the job's own fields.

Every parameter names a spec field by its dotted path (`train.lr`, `model.hidden`); a trial is the
job with those fields set. Whether each path exists and each value is valid is checked against the
job spec by `elastrain.tune.space.check_space`, which needs the spec beside it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from elastrain.spec.metrics import LOWER_IS_BETTER, metric_name

SAMPLERS = ("tpe", "random", "grid", "cmaes", "gp")
PRUNERS = ("asha", "hyperband", "median", "none")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ParamSpec(_Strict):
    """One dimension of the search space.

    `float` and `int` take `low`..`high` (inclusive; `log` samples on a log scale, `step` on a grid);
    `categorical` takes `choices` (numbers, strings, booleans, lists such as layer sizes). `when`
    makes the parameter conditional: it is sampled only in trials where every named parameter took
    the given value (e.g. `train.momentum` only when `train.optimizer` is `momentum`); otherwise the
    spec's own value stands.
    """

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = Field(None, gt=0)
    choices: list[Any] | None = None
    when: dict[str, Any] | None = Field(None, description="parameter path -> value that must be chosen for this one "
                                                          "to be sampled")

    @model_validator(mode="after")
    def _complete(self) -> ParamSpec:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty `choices` list")
            if self.low is not None or self.high is not None:
                raise ValueError("a categorical parameter takes `choices`, not low/high")
            return self
        if self.choices is not None:
            raise ValueError(f"a {self.type} parameter takes low and high, not `choices` (or make it categorical)")
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} parameter needs both `low` and `high`")
        if self.low > self.high:
            raise ValueError(f"low ({self.low:g}) is above high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scale parameter needs low > 0 (got {self.low:g})")
        if self.log and self.step is not None:
            raise ValueError("`log` and `step` cannot be combined; drop one")
        if self.type == "int" and not (float(self.low).is_integer() and float(self.high).is_integer()):
            raise ValueError("an int parameter needs whole-number low and high")
        return self


class BudgetSpec(_Strict):
    """When the study stops starting trials (any limit reached stops it; running trials are cancelled)."""

    wall_s: float | None = Field(None, gt=0, description="seconds since the study started (or resumed)")
    worker_s: float | None = Field(None, gt=0, description="worker-seconds all trials have used together")
    cost: float | None = Field(None, gt=0, description="money all trials have cost at price_per_worker_hour")
    price_per_worker_hour: float = Field(0.0, ge=0, description="what one worker costs per hour (for `cost`)")

    @model_validator(mode="after")
    def _priced(self) -> BudgetSpec:
        if self.cost is not None and self.price_per_worker_hour == 0:
            raise ValueError("budget.cost needs budget.price_per_worker_hour (what one worker costs per hour)")
        return self


class TuneSpec(_Strict):
    """A hyperparameter study over the job: what to vary, how to search, when to stop."""

    space: dict[str, ParamSpec] = Field(description="spec field path -> its range, e.g. train.lr: "
                                                    "{type: float, low: 1e-4, high: 1e-1, log: true}")
    metric: str = Field("auto", description="the validation metric trials are compared on; auto is val_accuracy "
                                            "(classification) or val_mse (regression)")
    direction: Literal["auto", "maximize", "minimize"] = Field(
        "auto", description="auto maximizes every metric but val_mse and val_mae")
    sampler: Literal["tpe", "random", "grid", "cmaes", "gp"] = "tpe"
    pruner: Literal["asha", "hyperband", "median", "none"] = "asha"
    min_epochs: int = Field(1, ge=1, description="epochs a trial runs before it may be pruned (ASHA's minimum "
                                                 "resource)")
    reduction_factor: int = Field(3, ge=2, description="ASHA/Hyperband: 1 in this many trials goes on at each rung")
    n_trials: int = Field(20, ge=1, le=100_000, description="trials the study finishes (completed or pruned)")
    max_concurrent: int | None = Field(None, ge=1, description="trials running at once (default: as many as the "
                                                               "workers allow, each at workers.min)")
    seed: int = Field(0, description="the sampler's seed (trials keep the job's train.seed)")
    budget: BudgetSpec = BudgetSpec()

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        return value if value == "auto" else metric_name(value)

    @field_validator("space")
    @classmethod
    def _not_empty(cls, value: dict[str, ParamSpec]) -> dict[str, ParamSpec]:
        if not value:
            raise ValueError("the search space is empty: name at least one spec field, e.g. train.lr")
        for path, param in value.items():
            for other in param.when or {}:
                if other not in value:
                    raise ValueError(f"{path}: `when` names '{other}', which is not a parameter of the space")
                if other == path:
                    raise ValueError(f"{path}: `when` cannot name the parameter itself")
        return value

    def maximize(self, metric: str) -> bool:
        """Whether the study maximizes `metric` (the resolved name of `self.metric`)."""
        if self.direction != "auto":
            return self.direction == "maximize"
        return metric not in LOWER_IS_BETTER
