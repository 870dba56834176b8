"""A folder `elastrain prepare` wrote, as a job's data: `data.source: prepared:FOLDER`.

Its layout and manifest are defined here, once, for the pass that writes it (`elastrain.prep.run`)
and the jobs that read it: training shards and validation shards of model-ready features
(`f0`, `f1`, ...) and the raw target (`label`), the fitted preprocessing (`preprocessing.json`)
and `manifest.json` (`PreparedManifest`). A job streams it like any sharded data
(`elastrain.data.streaming`), with the split the folder holds (every row of `train/` trains, every
row of `validation/` validates) and no scaling of its own (the features are scaled already).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import fsspec

from elastrain.data.shards import shard_info
from elastrain.errors import UserError
from elastrain.spec import JobSpec, ShardManifest

PLAN_FILE = "preprocessing.json"
MANIFEST_FILE = "manifest.json"
LABEL = "label"


def feature_column(index: int) -> str:
    """The shards' column of model-input feature `index`."""
    return f"f{index}"


@dataclass(frozen=True)
class PreparedManifest:
    """What `elastrain prepare` wrote, and from what.

    Attributes:
        inputs: the raw files, in the order their rows were read.
        input_fingerprint: sha256 over each input's name and size.
        train, validation: the shards written (paths relative to the folder), in row order.
        train_rows, validation_rows: rows per shard.
        features: the model input's feature names (`f{j}` in the shards).
        target, task: the target column and "classification" or "regression".
        classes, class_counts: the class labels, sorted, and training rows per class (None for
            regression).
        feature_mean, feature_var: each model-input feature's mean and variance over the
            training rows.
        rows_in: raw rows read; dropped: rows not written, by reason.
        fit_s, write_s: seconds of the two passes.
        workers: Ray Data's concurrency of the passes (None: Ray Data's choice).
    """

    inputs: list[str]
    input_fingerprint: str
    train: list[str]
    validation: list[str]
    train_rows: list[int]
    validation_rows: list[int]
    features: list[str]
    target: str
    task: str
    classes: list | None
    class_counts: list[int] | None
    feature_mean: list[float]
    feature_var: list[float]
    rows_in: int
    dropped: dict[str, int]
    fit_s: float
    write_s: float
    workers: int | None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def read(cls, folder: str) -> PreparedManifest:
        """The manifest of the prepared folder `folder` (a path or a URL).

        Raises:
            UserError: the folder holds no manifest, or one elastrain cannot read.
        """
        where = join(folder, MANIFEST_FILE)
        try:
            with fsspec.open(where, "r") as handle:
                return cls(**json.load(handle))
        except FileNotFoundError:
            raise UserError("no manifest.json: not a folder elastrain prepare wrote", where=folder,
                            fix="run `elastrain prepare job.yaml --out FOLDER` first") from None
        except (TypeError, ValueError) as exc:
            raise UserError(f"cannot read the manifest: {exc}", where=where,
                            fix="prepare the folder again with this version of elastrain") from None


def read_plan(folder: str) -> dict:
    """The fitted plan the prepared folder `folder` holds, as a dict (`PreparePlan.from_dict`).

    Raises:
        UserError: the folder holds no readable plan.
    """
    where = join(folder, PLAN_FILE)
    try:
        with fsspec.open(where, "r") as handle:
            return json.load(handle)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read the fitted preprocessing: {exc}", where=where,
                        fix="prepare the folder again (`elastrain prepare job.yaml --out FOLDER`)") from None


def join(folder: str, name: str) -> str:
    """`name` under the folder or URL `folder`."""
    return f"{folder.rstrip('/')}/{name}"


def shard_manifest(spec: JobSpec) -> ShardManifest:
    """The `ShardManifest` a job on the prepared folder `data.source` streams: the training shards'
    pieces, then the validation shards' (`validation_from` on), unscaled.

    Raises:
        UserError: the folder holds no readable manifest, or a shard listed is missing.
    """
    folder = spec.data.source_arg
    prepared = PreparedManifest.read(folder)
    urls = [join(folder, name) for name in (*prepared.train, *prepared.validation)]
    with ThreadPoolExecutor(16) as pool:
        infos = list(pool.map(lambda url: shard_info("parquet", url), urls))
    training = len(prepared.train)
    width = len(prepared.features)
    if spec.task_from_target:
        spec.model.task = prepared.task
    if spec.model.kind == "text":
        _text_layout(spec, read_plan(folder))
    return ShardManifest(
        shards=urls, pieces=[list(info.pieces) for info in infos],
        piece_bytes=[list(info.piece_bytes) for info in infos],
        train=[list(info.pieces) if index < training else [0] * len(info.pieces) for index, info in enumerate(infos)],
        features=[feature_column(j) for j in range(width)], width=width, seed=0,
        center=[0.0] * width, scale=[1.0] * width, feature_mean=prepared.feature_mean,
        feature_var=prepared.feature_var, classes=prepared.classes, class_counts=prepared.class_counts,
        validation_from=sum(len(info.pieces) for info in infos[:training]))


def _text_layout(spec: JobSpec, plan: dict) -> None:
    """Write into a text model's spec the vocabulary and the ids per row of the folder's text column.

    Raises:
        UserError: the folder holds no text column, or more than one.
    """
    texts = plan.get("text", [])
    if len(texts) != 1:
        raise UserError(f"model kind text takes one text column; the prepared folder has {len(texts)}",
                        where=spec.data.source, fix="declare exactly one column type: text when preparing, or "
                                                    "train another model kind")
    spec.model.vocabulary, spec.model.text_ids = texts[0]["vocabulary"], texts[0]["max_length"]
