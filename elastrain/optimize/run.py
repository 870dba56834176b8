"""`elastrain optimize`: build the candidates the options ask for, measure each on the model's own
validation split, ship the fastest that keeps accuracy (`report.choose`) as a new model directory."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from elastrain.errors import UserError
from elastrain.optimize import candidates as make
from elastrain.optimize.candidates import Candidate
from elastrain.optimize.measure import latency, scores_of, validation_metrics
from elastrain.optimize.report import DEFAULT_MAX_DROP_PT, REPORT_FILE, CandidateResult, OptimizeReport, choose
from elastrain.spec import JobSpec, validate_spec
from elastrain.store.repository import ModelInfo
from elastrain.train.artifact import META, PREPROCESS, WEIGHTS, load_model, read_meta

QUANTIZE_MODES = ("auto", "int8-dynamic", "int8-static", "none")


@dataclass(frozen=True)
class OptimizeOptions:
    """What to try.

    Attributes:
        quantize: auto (every int8 candidate), int8-dynamic (ONNX Runtime dynamic, torchao),
            int8-static (ONNX Runtime static QDQ) or none; float32 ONNX is always tried.
        calibration: training samples static quantization calibrates on.
        prune: the share of channels / hidden units structured pruning removes (None: no pruning).
        fine_tune_epochs: epochs a pruned model trains after pruning, on the training split.
        export: `onnx` ships an ONNX model even when no candidate beats the float32 one.
        max_drop_pt: the accuracy (or R²) the shipped model may lose, in percentage points.
        latency_s: seconds of calls each latency figure is measured over.
    """

    quantize: str = "auto"
    calibration: int = 256
    prune: float | None = None
    fine_tune_epochs: int = 3
    export: str | None = None
    max_drop_pt: float = DEFAULT_MAX_DROP_PT
    latency_s: float = 1.0


def optimize_model(source: str | Path, options: OptimizeOptions = OptimizeOptions(), output: Path | None = None,
                   spec: JobSpec | None = None, progress: Callable[[str], None] | None = None) -> OptimizeReport:
    """Measure the candidates `options` asks for against the model `source` (a float32 model
    directory, or a registered model: NAME, NAME:VERSION, NAME@ALIAS) and write the chosen one to
    `output` (default: beside the source, named `MODEL-CANDIDATE`) with its report; a registered
    source gets the shipped model as its next version, derived from it (`parent_version`). Nothing
    is written when the float32 model stays the best and no export was asked for.

    Args:
        spec: the job spec whose validation split the model is measured on (default: the one the
            model directory records, or the spec.yaml of its run folder).
        progress: told what is being done, once per step.

    Raises:
        UserError: `source` is not a float32 model directory, its job spec cannot be found, or
            an option is out of range.
    """
    from elastrain.store.model_ref import locate_model

    _check(options)
    parent = _registered(str(source))
    directory = Path(parent.url if parent else locate_model(str(source)))
    if not directory.is_dir():
        raise UserError("not a model directory on this machine", where=str(directory),
                        fix="optimize a local copy of the model (`elastrain run` saves one under ELASTRAIN_HOME)")
    tell = progress or (lambda _: None)
    saved = load_model(directory)
    meta = read_meta(directory)
    if meta["format"] == "xgboost":
        raise UserError("optimize quantizes, prunes and exports networks; a tree model (format xgboost) is already "
                        "served as it is, by XGBoost's own predictor", where=str(directory),
                        fix="serve or predict with it directly (elastrain serve / elastrain predict)")
    if meta["format"] != "torch":
        raise UserError(f"this model is already optimized (format {meta['format']})", where=str(directory),
                        fix="optimize the float32 model it was made from")
    job = spec or _job_spec(directory, meta)
    tell("reading the validation data")
    from elastrain.data import prepare_dataset

    data = prepare_dataset(job)
    rng = np.random.default_rng(job.train.seed)
    calibration = data.x_train[rng.permutation(len(data.x_train))[:options.calibration]]
    with tempfile.TemporaryDirectory(prefix="elastrain-optimize-") as scratch:
        work = Path(scratch)
        built = _build(saved.model, directory, data, job, saved.loss, calibration, options, work, tell)
        results = _measure(built, data, options, tell)
        choice = choose(results, options.max_drop_pt)
        shipped, reason = choice.name, choice.reason
        if options.export == "onnx" and next(c for c in built if c.name == shipped).format != "onnx":
            shipped, reason = "onnx-fp32", f"exported to ONNX as asked ({reason})"
        model_path = None
        if shipped != "fp32":
            target = output or directory.with_name(f"{directory.name}-{shipped}")
            model_path = str(save_candidate(next(c for c in built if c.name == shipped), directory, meta, target))
    registered = None
    if model_path and parent:
        registered = _register(parent, next(r for r in results if r.name == shipped), Path(model_path))
    report = OptimizeReport(str(source), shipped, reason, model_path, registered, tuple(results), len(data.x_val))
    if model_path:
        (Path(model_path) / REPORT_FILE).write_text(json.dumps(report.summary(), indent=2))
    return report


def _registered(text: str) -> ModelInfo | None:
    """The registered version `text` names in this machine's registry, if it names one."""
    from elastrain.store.model_ref import ModelNotFound, local_registry, parse_model_ref, resolve_model_ref

    reference = parse_model_ref(text)
    if reference.path is not None:
        return None
    with local_registry() as (store, owner):
        try:
            return resolve_model_ref(store, owner, reference)
        except ModelNotFound:
            return None


def _register(parent: ModelInfo, shipped: CandidateResult, path: Path) -> str:
    """Register the model at `path` as the next version of `parent`'s model, derived from it;
    "NAME vVERSION"."""
    from elastrain.store.model_ref import local_registry
    from elastrain.train.artifact import model_files

    with local_registry() as (store, owner):
        info = store.register_model(owner, parent.name, str(path), {f"val_{k}": v for k, v in shipped.metrics.items()},
                                    parent.spec_hash, parent.data_fingerprint, parent.job_id,
                                    parent_version=parent.version,
                                    size_bytes=sum(f.stat().st_size for f in model_files(path)))
    return f"{info.name} v{info.version}"


def _check(options: OptimizeOptions) -> None:
    if options.quantize not in QUANTIZE_MODES:
        raise UserError(f"unknown quantization '{options.quantize}'", where="--quantize",
                        fix=f"choose one of {', '.join(QUANTIZE_MODES)}")
    if options.prune is not None and not 0 < options.prune < 1:
        raise UserError(f"a pruning ratio of {options.prune:g} removes nothing or everything", where="--prune",
                        fix="give the share of channels to remove, e.g. 0.5")
    if options.export not in (None, "onnx"):
        raise UserError(f"unknown export format '{options.export}'", where="--export", fix="use --export onnx")
    if options.calibration < 1:
        raise UserError("static quantization needs calibration samples", where="--calibration",
                        fix="give a positive number, e.g. 256")


def _job_spec(directory: Path, meta: dict) -> JobSpec:
    """The job spec the model was trained by: recorded in model.json, else its run folder's."""
    if meta.get("job"):
        return validate_spec(meta["job"], str(directory / META))
    from elastrain.runs import RunFolder

    run = RunFolder(directory.parent)   # a model of `elastrain run` lies in its run folder
    if run.spec_file.is_file():
        return run.read_spec()
    raise UserError("cannot tell which data this model was trained on", where=str(directory),
                    fix="pass --spec with the job spec it was trained by")


def _build(model, directory: Path, data, job: JobSpec, loss: str, calibration: np.ndarray,
           options: OptimizeOptions, work: Path, tell: Callable[[str], None]) -> list[Candidate]:
    """The float32 model, then the candidates the options ask for."""
    n_features = data.x_val.shape[1]
    built = [make.baseline(model, directory / WEIGHTS["torch"])]
    tell("exporting to ONNX")
    built += _onnx_family(make.onnx_fp32(model, n_features, work), work, calibration, options, tell)
    if options.quantize in ("auto", "int8-dynamic") and options.export != "onnx":
        tell("quantizing with torchao")
        built.append(make.torchao_int8(model, work))
    if options.prune is not None:
        percent = round(options.prune * 100)
        tell(f"pruning {percent}% of the channels, fine-tuning {options.fine_tune_epochs} epochs")
        tuner = make.fine_tuner(data.x_train, data.y_train, loss, job.train.lr, job.train.batch_size,
                                options.fine_tune_epochs, job.train.seed)
        pruned = make.prune_structured(model, n_features, options.prune, tuner)
        how = f"{percent}% of channels and hidden units removed (torch-pruning, L2), fine-tuned " \
              f"{options.fine_tune_epochs} epochs, ONNX Runtime"
        fp32 = make.onnx_fp32(pruned, n_features, work, f"pruned-{percent}", how)
        built += _onnx_family(fp32, work, calibration, options, tell)
    return built


def _onnx_family(fp32: Candidate, work: Path, calibration: np.ndarray, options: OptimizeOptions,
                 tell: Callable[[str], None]) -> list[Candidate]:
    """An ONNX float32 candidate and its int8 forms the options ask for."""
    family = [fp32]
    prefix = "" if fp32.name == "onnx-fp32" else f"{fp32.name}-"
    if options.quantize in ("auto", "int8-dynamic"):
        tell(f"quantizing {fp32.name} (dynamic int8)")
        family.append(make.onnx_int8_dynamic(fp32, work, f"{prefix or 'onnx-'}int8-dynamic"))
    if options.quantize in ("auto", "int8-static"):
        tell(f"quantizing {fp32.name} (static int8, {len(calibration)} calibration samples)")
        family.append(make.onnx_int8_static(fp32, work, calibration, f"{prefix or 'onnx-'}int8-static"))
    return family


def _measure(built: list[Candidate], data, options: OptimizeOptions,
             tell: Callable[[str], None]) -> list[CandidateResult]:
    n_classes = int(data.n_classes) if data.n_classes else None
    base_scores = scores_of(built[0].network, data.x_val)
    metric = "r2" if data.task == "regression" else "accuracy"
    base_value = None
    results = []
    for candidate in built:
        tell(f"measuring {candidate.name}")
        scores = scores_of(candidate.network, data.x_val)
        metrics = validation_metrics(scores, data.y_val, data.task, n_classes)
        base_value = metrics[metric] if base_value is None else base_value
        one, many = (latency(candidate.network, data.x_val, batch, options.latency_s) for batch in (1, 64))
        results.append(CandidateResult(
            name=candidate.name, format=candidate.format, how=candidate.how,
            size_bytes=candidate.weights.stat().st_size, p50_ms_b1=one.p50_ms, p99_ms_b1=one.p99_ms,
            p50_ms_b64=many.p50_ms, p99_ms_b64=many.p99_ms, samples_per_s=round(many.samples_per_s, 1),
            metric=metric, value=round(metrics[metric], 6), drop_pt=round((base_value - metrics[metric]) * 100, 4),
            max_abs_diff=float(np.abs(scores - base_scores).max()),
            metrics={k: round(v, 6) for k, v in metrics.items()}))
    return results


def save_candidate(candidate: Candidate, source: str | Path, meta: dict, target: Path) -> Path:
    """A model directory at `target` holding `candidate`, with the preprocessing of the model
    directory `source` and its model.json (`meta`) marked with the candidate's format and origin."""
    source = Path(source)
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    shutil.copyfile(candidate.weights, target / WEIGHTS[candidate.format])
    shutil.copyfile(source / PREPROCESS, target / PREPROCESS)
    derived = {**meta, "format": candidate.format,
               "optimized": {"from": str(source), "candidate": candidate.name, "how": candidate.how}}
    (target / META).write_text(json.dumps(derived, indent=2))
    return target
