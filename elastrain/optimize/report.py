"""The optimizer's report and its choice: pure functions over plain data."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

REPORT_FILE = "optimize_report.json"   # written beside the shipped model (`OptimizeReport.summary`)

DEFAULT_MAX_DROP_PT = 0.5   # the accuracy (or R²) a shipped candidate may lose, in percentage points


@dataclass(frozen=True)
class CandidateResult:
    """One candidate as measured.

    Attributes:
        name / format / how: see `elastrain.optimize.candidates.Candidate`.
        size_bytes: its weights file on disk.
        p50_ms_b1 / p99_ms_b1: CPU latency of one call at batch 1 (milliseconds).
        p50_ms_b64 / p99_ms_b64: the same at batch 64.
        samples_per_s: throughput at batch 64 (median call).
        metric / value: the headline validation metric (accuracy, or r2 for a regression).
        drop_pt: how far `value` is below the float32 model's, in percentage points (negative: above).
        max_abs_diff: the largest difference of its scores from the float32 model's on the validation set.
        metrics: every validation metric (precision, recall, F1 macro; or MSE, MAE).
    """

    name: str
    format: str
    how: str
    size_bytes: int
    p50_ms_b1: float
    p99_ms_b1: float
    p50_ms_b64: float
    p99_ms_b64: float
    samples_per_s: float
    metric: str
    value: float
    drop_pt: float
    max_abs_diff: float
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Choice:
    """The candidate to ship and why."""

    name: str
    reason: str


def choose(results: Sequence[CandidateResult], max_drop_pt: float = DEFAULT_MAX_DROP_PT) -> Choice:
    """The fastest candidate at batch 64 that loses at most `max_drop_pt` points and is not
    slower than the float32 model at batch 1 (ties: the smaller file); the float32 model itself
    (`results[0]`) when none is faster at batch 64 on those terms. On CPU, int8 can be slower than
    float32 for small layers (pytorch/pytorch#62804), so nothing is assumed: only measurements decide."""
    base, rest = results[0], results[1:]
    kept = [r for r in rest if r.drop_pt <= max_drop_pt and r.p50_ms_b1 <= base.p50_ms_b1
            and r.p50_ms_b64 < base.p50_ms_b64]
    if not kept:
        return Choice(base.name, f"no candidate was faster at batch 64 without losing more than {max_drop_pt:g} "
                                 f"points of {base.metric} or being slower at batch 1")
    best = min(kept, key=lambda r: (r.p50_ms_b64, r.size_bytes))
    return Choice(best.name, f"fastest at batch 64 ({base.p50_ms_b64 / best.p50_ms_b64:.2f}x the float32 model) "
                             f"among those within {max_drop_pt:g} points of {base.metric} and not slower at batch 1")


@dataclass(frozen=True)
class OptimizeReport:
    """What `elastrain optimize` measured and shipped.

    Attributes:
        source: the model optimized (its directory or registry reference).
        shipped: the chosen candidate's name (`fp32`: the model was kept as it is).
        reason: why (see `choose`).
        model_path: the shipped model's directory (None when it is the source itself).
        registered: the new model version, "NAME vVERSION", when it was registered.
        candidates: every candidate, the float32 model first.
        validation_rows: how many validation samples the metrics are over.
    """

    source: str
    shipped: str
    reason: str
    model_path: str | None
    registered: str | None
    candidates: tuple[CandidateResult, ...]
    validation_rows: int

    def shipped_result(self) -> CandidateResult:
        """The shipped candidate's measurements."""
        return next(r for r in self.candidates if r.name == self.shipped)

    def summary(self) -> dict[str, Any]:
        """The JSON object `elastrain optimize --json` prints: shipped, size_ratio,
        speedup_batch64, speedup_batch1, accuracy_drop_pt, and the rest of the report."""
        base, best = self.candidates[0], self.shipped_result()
        return {"shipped": self.shipped, "size_ratio": round(best.size_bytes / base.size_bytes, 4),
                "speedup_batch64": round(base.p50_ms_b64 / best.p50_ms_b64, 3),
                "speedup_batch1": round(base.p50_ms_b1 / best.p50_ms_b1, 3),
                "accuracy_drop_pt": round(best.drop_pt, 3), "metric": base.metric, "reason": self.reason,
                "source": self.source, "model_path": self.model_path, "registered": self.registered,
                "validation_rows": self.validation_rows,
                "candidates": [asdict(r) for r in self.candidates]}
