"""The job specification: what to train, on what data, how, and on how many workers."""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    field_validator,
    model_validator,
)

from elastrain.plugins import LEARNERS, SOURCES, import_plugins
from elastrain.spec.federated import FederatedSpec
from elastrain.spec.metrics import metric_name
from elastrain.spec.tune import TuneSpec

SOURCE_KINDS = ("builtin", "csv", "parquet", "npz", "npy", "jsonl", "idx", "synthetic", "prepared")
FILE_SOURCES = ("csv", "parquet", "npz", "npy", "jsonl", "idx", "prepared")
# Formats whose shards are streamed to the workers (`elastrain.data.streaming`).
SHARD_FORMATS = ("parquet", "npy", "csv", "jsonl")
GLOB_WILDCARDS = "*?["
# Each built-in data set's task: the one `model.task: auto` takes when model and loss leave it open.
BUILTIN_TASKS = {"digits": "classification", "iris": "classification", "wine": "classification",
                 "breast_cancer": "classification", "diabetes": "regression"}
BUILTIN_DATASETS = tuple(BUILTIN_TASKS)
SYNTHETIC_KINDS = ("classification", "regression")
FLOAT32_MAX = 3.4028234663852886e38
MODEL_KINDS = ("linear", "logistic", "softmax", "svm", "mlp", "cnn", "text", "gbdt", "random_forest", "decision_tree")
# Kinds learned by XGBoost (`elastrain.train.trees`) rather than by gradient steps of a network.
TREE_KINDS = ("gbdt", "random_forest", "decision_tree")
REGRESSION_LOSSES = ("mse", "mae")
CLASSIFICATION_LOSSES = ("cross_entropy", "bce", "hinge", "squared_hinge")

# Which losses each model kind accepts; the first is its default.
LOSSES_BY_MODEL: dict[str, tuple[str, ...]] = {
    "linear": REGRESSION_LOSSES,
    "logistic": ("bce",),
    "softmax": ("cross_entropy",),
    "svm": ("hinge", "squared_hinge"),
}


class FieldError(ValueError):
    """A cross-field validation failure that belongs to one field (`loc`, from the spec's root)."""

    def __init__(self, loc: tuple[str, ...], message: str) -> None:
        self.loc = loc
        super().__init__(message)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SyntheticSpec(_Strict):
    """Size of a generated data set (`synthetic:classification|regression`)."""

    n_samples: int = Field(1000, ge=10)
    n_features: int = Field(20, ge=1)
    n_informative: int | None = Field(None, ge=1)
    n_classes: int = Field(2, ge=2)
    noise: float = Field(0.1, ge=0)


class CsvSpec(_Strict):
    """How a CSV file separates values; a field left None is detected from the file's first lines."""

    sep: str | None = Field(None, min_length=1, max_length=1, description="between values: , ; tab | ...")
    decimal: Literal[".", ","] | None = None

    @model_validator(mode="after")
    def _distinct(self) -> CsvSpec:
        if self.sep is not None and self.sep == self.decimal:
            raise FieldError(("data", "csv", "decimal"), f"the separator and the decimal mark are both '{self.sep}'")
        return self


def npy_targets(features_file: str) -> str:
    """The targets file of a `.npy` shard pair (NAME.y.npy), given its features file (NAME.x.npy)."""
    return features_file.removesuffix(".x.npy") + ".y.npy"


class TextSpec(_Strict):
    """How `elastrain prepare` turns a text column into token ids (see `elastrain.data.text`).

    The text is normalized (Unicode NFKC, lower case unless `lowercase: false`), segmented into
    words (`segment`: `jieba` for Chinese word segmentation, `char` for one token per Chinese
    character, `none` for text whose words are separated by spaces, `auto` to choose by the
    script of the first rows), and a subword tokenizer (`bpe`, `wordpiece` or `unigram`, from
    HuggingFace `tokenizers`) with `vocab_size` entries is trained on the training rows; each text
    becomes `max_length` ids, truncated or padded with 0. Only `bpe` gives the same tokenizer on
    every run (the library's WordPiece and Unigram trainers do not), so only with it do 1 and N
    workers prepare the same shards.
    """

    tokenizer: Literal["bpe", "wordpiece", "unigram"] = "bpe"
    vocab_size: int = Field(8000, ge=50)
    max_length: int = Field(64, ge=1)
    segment: Literal["auto", "jieba", "char", "none"] = "auto"
    lowercase: bool = True


class ColumnSpec(_Strict):
    """How `elastrain prepare` treats one column of a raw table (see `elastrain.prep`).

    `type`: `auto` takes the column's type in the data (numbers are numeric, anything else
    categorical). `missing`, for a blank cell: `error` (one line naming the row and column),
    `mean` (numeric), `most_frequent` (categorical; the smallest of tied levels), or `level`
    (categorical: blanks are a level of their own, last); left out, `error` for numeric columns
    and `level` for categorical ones. `min_frequency`: a categorical level seen in fewer training
    rows is treated as unknown. `unknown`: a level the training rows did not have (or too rare)
    is all zeros (`ignore`) or a one-hot slot of its own, `(unknown)` (`level`). A `text` column
    (declared: free text is never inferred) becomes token ids as `text` says; a blank is an empty
    text. A `skip` column is not a feature (an id, a column known only later).
    """

    type: Literal["auto", "numeric", "categorical", "text", "skip"] = "auto"
    missing: Literal["error", "mean", "most_frequent", "level"] | None = None
    min_frequency: int = Field(1, ge=1)
    unknown: Literal["ignore", "level"] = "ignore"
    text: TextSpec = TextSpec()


class ShardManifest(_Strict):
    """What a job on sharded data trains on, fixed when it starts: written by elastrain into the
    job's spec (leave it out of yours), so that every worker and a resume see the same shards, the
    same split and the same preprocessing (see `elastrain.data.streaming`).

    Per shard, in listing order: `pieces` rows per piece (a Parquet row group, a run of `.npy`
    rows), `piece_bytes` bytes each piece reads from storage, `train` its training rows (the rest
    are validation rows, by hash of the row id with `seed`). `features` the feature columns in
    model-input order (empty for `.npy`), `width` features per row; `center`/`scale` the fitted
    scaling (one value each for global scaling); `feature_mean`/`feature_var` each feature's raw
    mean and variance over the training rows; `classes` the class labels and `class_counts` their
    training rows (None for regression); `stats_s` the seconds the statistics pass took.
    """

    shards: list[str]
    pieces: list[list[int]]
    piece_bytes: list[list[int]]
    train: list[list[int]] = []
    features: list[str]
    width: int
    seed: int
    center: list[float] = []
    scale: list[float] = []
    feature_mean: list[float] = []
    feature_var: list[float] = []
    classes: list[int | float | str] | None = None
    class_counts: list[int] | None = None
    stats_s: float = 0.0
    # Pieces from this one on hold only validation rows, and the others only training rows (a
    # folder `elastrain prepare` wrote); None: each piece's rows are split by a hash of their ids.
    validation_from: int | None = None


class DataSpec(_Strict):
    """Where the data comes from and how it is split and preprocessed.

    `source` names one file read into memory (`csv:`, `parquet:`, `npz:`, `idx:`), built-in or
    synthetic data, or shards streamed to the workers: `parquet:`, `csv:` (also gzipped) or `npy:`
    with a glob or a URL (`parquet:s3://bucket/higgs/part-*.parquet`), and `jsonl:` (JSON Lines)
    always. Streamed rows are shuffled within windows of `shuffle_window` training rows (see
    `elastrain.data.stream_order`).
    """

    source: str = "builtin:digits"
    target: str = "target"
    categorical: list[str] | None = None
    columns: dict[str, ColumnSpec] = {}
    validation_source: str | None = Field(None, description="elastrain prepare: a raw table (as source) whose rows "
                                          "are the validation split; the source's rows then all train")
    npz_keys: tuple[str, str] = ("X", "y")
    validation_fraction: float = Field(0.2, gt=0, lt=1)
    split_seed: int | None = None
    scaling: Literal["standardize", "minmax", "none"] = "standardize"
    scaling_per: Literal["auto", "feature", "global"] = "auto"
    synthetic: SyntheticSpec = SyntheticSpec()
    csv: CsvSpec = CsvSpec()
    shuffle_window: int = Field(1_000_000, ge=1)
    manifest: ShardManifest | None = None

    @field_validator("source")
    @classmethod
    def _known_source(cls, value: str) -> str:
        kind, _, arg = value.partition(":")
        if kind in SOURCES:   # a plugin's scheme: its class reads the argument
            return value
        if kind not in SOURCE_KINDS or not arg:
            raise ValueError(
                f"'{value}' is not a data source; use one of "
                + ", ".join(f"{k}:..." for k in (*SOURCE_KINDS, *SOURCES))
            )
        if kind == "builtin" and arg not in BUILTIN_DATASETS:
            raise ValueError(f"unknown built-in data set '{arg}'; choose one of {', '.join(BUILTIN_DATASETS)}")
        if kind == "synthetic" and arg not in SYNTHETIC_KINDS:
            raise ValueError(f"unknown synthetic kind '{arg}'; choose classification or regression")
        return value

    @property
    def source_kind(self) -> str:
        """The part of `source` before the colon (builtin, csv, ...)."""
        return self.source.partition(":")[0]

    @property
    def source_arg(self) -> str:
        """The part of `source` after the colon (a name, a path or a synthetic kind)."""
        return self.source.partition(":")[2]

    @property
    def streamed(self) -> bool:
        """Whether `source` names shards to stream (a glob or a URL, or `.npy` pairs) rather than
        one file read into memory."""
        arg = self.source_arg
        return self.source_kind == "prepared" or (self.source_kind in SHARD_FORMATS and (
            any(c in arg for c in GLOB_WILDCARDS) or "://" in arg or self.source_kind in ("npy", "jsonl")))

    @property
    def on_local_disk(self) -> bool:
        """Whether `source` names a local file, folder or glob (a path made absolute against the
        spec's folder), not built-in data or a URL."""
        return self.source_kind in FILE_SOURCES and "://" not in self.source_arg

    @property
    def task(self) -> str | None:
        """The task the source itself declares (built-in and synthetic data sets), else None."""
        if self.source_kind == "builtin":
            return BUILTIN_TASKS[self.source_arg]
        return self.source_arg if self.source_kind == "synthetic" else None


class _ModelFields(_Strict):
    """What every model spec has: its kind and the task it learns."""

    kind: str
    task: Literal["auto", "classification", "regression"] = "auto"


class LinearModelSpec(_ModelFields):
    """One linear layer: linear regression, logistic (binary) or softmax (multi-class) classification."""

    kind: Literal["linear", "logistic", "softmax"] = "linear"


class SvmModelSpec(_ModelFields):
    """A support-vector machine trained by gradient descent on a hinge loss, linear or RBF-kernel."""

    kind: Literal["svm"] = "svm"
    kernel: Literal["linear", "rbf"] = Field(
        "linear", description="rbf trains an RBF-kernel SVM by gradient descent on random Fourier features")
    gamma: float | Literal["scale"] = Field(
        "scale", description="the RBF kernel's width: exp(-gamma |x - y|^2); scale is 1 / (features x variance of "
                             "the training features), scikit-learn's default")
    n_components: int = Field(
        1000, ge=1, le=100_000, description="random Fourier features of kernel rbf (more: closer to the exact "
                                           "kernel, slower)")

    @field_validator("gamma")
    @classmethod
    def _positive_gamma(cls, value: float | str) -> float | str:
        if value != "scale" and not 0 < value < FLOAT32_MAX:
            raise ValueError("gamma must be a positive number or scale")
        return value


class _DenseLayers(_ModelFields):
    """Fully connected hidden layers (an MLP, or a CNN's head)."""

    hidden: list[int] = Field(default_factory=lambda: [64])
    activation: Literal["relu", "tanh", "gelu", "sigmoid"] = "relu"
    dropout: float = Field(0.0, ge=0, lt=1)

    @field_validator("hidden")
    @classmethod
    def _positive_sizes(cls, value: list[int]) -> list[int]:
        return _positive_layer_sizes(value)


class MlpModelSpec(_DenseLayers):
    """A multi-layer perceptron."""

    kind: Literal["mlp"] = "mlp"


class CnnModelSpec(_DenseLayers):
    """Convolutions (each with the activation, then a 2x2 max-pool while the image allows it) and a
    dense head of `hidden` layers with the activation and dropout."""

    kind: Literal["cnn"] = "cnn"
    channels: list[int] = Field(default_factory=lambda: [16, 32])
    kernel_size: int = Field(3, ge=1)

    @field_validator("channels")
    @classmethod
    def _positive_channels(cls, value: list[int]) -> list[int]:
        return _positive_layer_sizes(value)


class TextModelSpec(_ModelFields):
    """A text model on the token ids of a folder `elastrain prepare` wrote (`data.source:
    prepared:FOLDER`, one text column): the text's token embeddings (`embedding_dim`), pooled
    by their mean over the non-padding tokens, either as they are (`encoder: bag`, fastText-like)
    or after a transformer encoder of `layers` layers and `heads` heads with learned positions
    (`encoder: transformer`); the other features (numbers, one-hot levels) join the pooled vector
    before one linear layer. `vocabulary` and `text_ids` are the data's, written here when the
    job starts (leave them out)."""

    kind: Literal["text"] = "text"
    encoder: Literal["bag", "transformer"] = "bag"
    embedding_dim: int = Field(64, ge=1)
    layers: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)
    vocabulary: int = Field(0, ge=0)
    text_ids: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _heads_divide(self) -> TextModelSpec:
        if self.encoder == "transformer" and self.embedding_dim % self.heads:
            raise FieldError(("model", "heads"), f"embedding_dim {self.embedding_dim} is not a multiple of heads "
                                                 f"{self.heads}")
        return self


class TreeModelSpec(_ModelFields):
    """Trees learned by XGBoost's `hist` method (see `elastrain.train.trees`): gradient boosting
    (`gbdt`, `rounds` rounds of one tree each), a random forest (`random_forest`: one round of
    `trees_per_round` trees, each on a `colsample_bynode` share of the features at every split), or
    a single tree (`decision_tree`). Classification (binary: log loss; multi-class: softmax) or
    regression (squared error), as the data's task.

    Left out, `rounds`, `learning_rate`, `trees_per_round` and `colsample_bynode` take the kind's
    defaults: gbdt 100 rounds at 0.3; random_forest 1 round of 100 trees at 1.0, 0.8 of the
    features per split; decision_tree 1 round of 1 tree at 1.0.

    A job gives the same trees on any number of workers and across resizes (the quantile cuts are
    computed once, from `cut_sample` training rows every worker draws alike) unless `subsample` < 1
    (each worker samples its own rows) or, with `rounds` > 1, `colsample_bytree` / `colsample_bynode`
    < 1 (XGBoost restarts its column sampler when a re-formed group reloads the booster).
    """

    kind: Literal["gbdt", "random_forest", "decision_tree"] = "gbdt"
    rounds: int | None = Field(None, ge=1, le=100_000, description="boosting rounds (one step each)")
    learning_rate: float | None = Field(None, gt=0, le=1, description="XGBoost's eta: each round's shrinkage")
    max_depth: int = Field(6, ge=1, le=30)
    min_child_weight: float = Field(1.0, ge=0, description="the least hessian sum a leaf may hold")
    subsample: float = Field(1.0, gt=0, le=1, description="rows each tree samples (< 1 breaks the same trees on "
                                                          "another number of workers)")
    colsample_bytree: float = Field(1.0, gt=0, le=1)
    colsample_bynode: float | None = Field(None, gt=0, le=1)
    reg_lambda: float = Field(1.0, ge=0, description="L2 regularization of leaf weights (XGBoost's lambda)")
    reg_alpha: float = Field(0.0, ge=0, description="L1 regularization of leaf weights (XGBoost's alpha)")
    trees_per_round: int | None = Field(None, ge=1, le=10_000, description="XGBoost's num_parallel_tree")
    max_bin: int = Field(256, ge=2, le=65_536, description="histogram bins per feature")
    cut_sample: int = Field(1_000_000, ge=1, description="training rows the quantile cuts are computed from "
                                                         "(all of them when there are fewer)")
    eval_every: int = Field(1, ge=1, description="rounds between evaluations of the validation rows (the last "
                                                 "round is always evaluated); early stopping's patience counts "
                                                 "evaluations")

    @property
    def boosting_rounds(self) -> int:
        """`rounds`, or the kind's default."""
        return self.rounds or (100 if self.kind == "gbdt" else 1)

    @property
    def eta(self) -> float:
        """`learning_rate`, or the kind's default."""
        return self.learning_rate or (0.3 if self.kind == "gbdt" else 1.0)

    @property
    def parallel_trees(self) -> int:
        """`trees_per_round`, or the kind's default."""
        return self.trees_per_round or (100 if self.kind == "random_forest" else 1)

    @property
    def node_colsample(self) -> float:
        """`colsample_bynode`, or the kind's default."""
        return self.colsample_bynode or (0.8 if self.kind == "random_forest" else 1.0)


def _positive_layer_sizes(value: list[int]) -> list[int]:
    if any(size < 1 for size in value):
        raise ValueError("every layer size must be >= 1")
    return value


class PythonModelSpec(_ModelFields):
    """A user's model: `kind: python:module:function`, called with input_shape=, n_outputs= and
    the keys of `options`."""

    options: dict = Field(default_factory=dict)

    @field_validator("kind")
    @classmethod
    def _module_and_function(cls, value: str) -> str:
        parts = value.split(":")
        if len(parts) == 3 and parts[0] == "python" and all(parts[1:]):
            return value
        raise ValueError(f"'{value}' must look like python:package.module:function")


class PluginModelSpec(_ModelFields):
    """A kind a plugin registered (`elastrain.plugins.register_learner`); its learner reads `options`."""

    options: dict = Field(default_factory=dict)

    @field_validator("kind")
    @classmethod
    def _registered(cls, value: str) -> str:
        if value not in LEARNERS:
            raise ValueError(f"no plugin registers model '{value}'; name the plugin under `plugins`")
        return value


# The member of the model spec union each tag stands for (see `model_tag`).
MODEL_SPECS: dict[str, type[_ModelFields]] = {
    "linear": LinearModelSpec, "svm": SvmModelSpec, "mlp": MlpModelSpec, "cnn": CnnModelSpec,
    "text": TextModelSpec, "tree": TreeModelSpec, "python": PythonModelSpec, "plugin": PluginModelSpec,
}
# The fields of the flat model spec that elastrain wrote before the union (every saved model's
# model.json, every stored job's spec carries all of them); see `_check_model_fields`.
_FLAT_FIELDS = frozenset({"kind", "task", "hidden", "activation", "dropout", "channels", "kernel_size", "options"})


def model_tag(kind: object) -> str | None:
    """The tag of the model spec class that takes `kind` (a key of `MODEL_SPECS`), None if none does.

    A plugin's kind comes first, as in `elastrain.train.learner.learner_class`: the spec takes the
    fields of the learner that will train it.
    """
    if not isinstance(kind, str):
        return None
    if kind in LEARNERS:
        return "plugin"
    if kind in ("linear", "logistic", "softmax"):
        return "linear"
    if kind in TREE_KINDS:
        return "tree"
    if kind in MODEL_KINDS:
        return kind
    return "python" if kind.startswith("python:") else None


def _model_tag(raw: object) -> str | None:
    # A mapping without a kind is an mlp, the default model.
    if isinstance(raw, dict):
        return model_tag(raw.get("kind", "mlp"))
    return model_tag(getattr(raw, "kind", None)) if isinstance(raw, _ModelFields) else None


def _kinds_of(tag: str) -> list[str]:
    """The kinds a tag stands for, as a person writes them."""
    if tag == "plugin":
        return list(LEARNERS) or ["a plugin's kind"]
    if tag == "python":
        return ["python:module:function"]
    return list(get_args(MODEL_SPECS[tag].model_fields["kind"].annotation))


def _check_model_fields(raw: object) -> object:
    """Refuse an unknown kind in one line, and a field of another kind set to a value of its own in
    one line naming the kinds that take it.

    A field of another kind at its default is dropped: a spec dumped as JSON carries its kind's
    defaults, and an override (`--set model.kind=...`, a study's trial) may change the kind under
    them. So is every field the kind does not take from the flat model spec an older elastrain
    wrote (a saved model's, a stored job's), which carries every kind's fields.
    """
    tag = _model_tag(raw)
    if not isinstance(raw, dict):
        return raw
    kind = raw.get("kind", "mlp")
    if tag is None:
        raise FieldError(("model", "kind"), f"unknown model '{kind}'; choose one of "
                         f"{', '.join((*MODEL_KINDS, *LEARNERS))} or python:module:function "
                         "(or name the plugin that registers it under `plugins`)")
    fields = MODEL_SPECS[tag].model_fields
    flat = _FLAT_FIELDS.issubset(raw)
    kept = {}
    for key, value in raw.items():
        others = {other: spec.model_fields[key] for other, spec in MODEL_SPECS.items()
                  if key in spec.model_fields and key not in fields}
        if not others:   # its own field, or one no kind has (refused as unknown, with the nearest name)
            kept[key] = value
        elif not flat and all(field.get_default(call_default_factory=True) != value for field in others.values()):
            takers = [k for other in others for k in _kinds_of(other)]
            setting = f"{key} {value}" if isinstance(value, str | int | float) else key
            if len(takers) == 1:
                message = f"{setting} applies to model {takers[0]}, not {kind}; set model.kind: {takers[0]} or "
            else:
                message = f"{setting} applies to models {', '.join(takers)}, not {kind}; set model.kind to one of " \
                          "them or "
            raise FieldError(("model", key), f"{message}remove model.{key}")
    return kept


ModelSpec = Annotated[
    Annotated[LinearModelSpec, Tag("linear")] | Annotated[SvmModelSpec, Tag("svm")]
    | Annotated[MlpModelSpec, Tag("mlp")] | Annotated[CnnModelSpec, Tag("cnn")]
    | Annotated[TextModelSpec, Tag("text")] | Annotated[TreeModelSpec, Tag("tree")]
    | Annotated[PythonModelSpec, Tag("python")]
    | Annotated[PluginModelSpec, Tag("plugin")],
    Discriminator(_model_tag, custom_error_type="model_spec_type",
                  custom_error_message="Input should be a mapping of the model's fields (kind, task, ...)"),
    BeforeValidator(_check_model_fields),
]
"""Which model to build: one class per family of kinds, chosen by `kind` (default mlp); `kind`
may also be `python:module:function` or a kind a plugin registered."""

_MODEL_SPEC = TypeAdapter(ModelSpec)


def tagged_members(annotation: object) -> dict[str, type[BaseModel]]:
    """The members of a discriminated union annotation (as `ModelSpec`) by their tag; {} for any
    other annotation. A validation error inside a member has the tag in its location."""
    members: dict[str, type[BaseModel]] = {}
    for member in get_args(annotation):
        cls, *marks = get_args(member) or (member,)
        members |= {mark.tag: cls for mark in marks if isinstance(mark, Tag)}
    return members


def parse_model_spec(raw: object) -> ModelSpec:
    """Validate a `model` section given as a dict (a saved model's model.json included, whose
    older flat form drops the fields its kind does not take).

    Raises:
        pydantic.ValidationError: the section is not a valid model spec; an error in one kind's
            field has the kind's tag (a key of `MODEL_SPECS`) first in its location.
    """
    return _MODEL_SPEC.validate_python(raw)


class ScheduleSpec(_Strict):
    """Learning-rate schedule: a factor of `train.lr` as a function of the step."""

    kind: Literal["constant", "step", "cosine"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    step_size: int = Field(1000, ge=1, description="steps between decays for kind=step")
    gamma: float = Field(0.1, gt=0, le=1, description="decay factor for kind=step")
    min_factor: float = Field(0.0, ge=0, le=1, description="floor of the cosine decay")


class EarlyStoppingSpec(_Strict):
    """Stop when a validation metric has not improved for `patience` evaluations (one per epoch)."""

    metric: str = Field("auto", description="a validation metric, e.g. val_f1_macro; auto is train.keep_best's, "
                                            "else val_accuracy (classification) or val_mse (regression)")
    patience: int = Field(5, ge=1, description="epochs without improvement before training stops")
    min_delta: float = Field(0.0, ge=0, description="an improvement must exceed this to count")

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        return value if value == "auto" else metric_name(value)


class TrainSpec(_Strict):
    """How to train: optimizer, loss, batch, length, seed, and the options that shape them."""

    optimizer: Literal["gd", "sgd", "momentum", "nesterov", "adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(0.0, ge=0)
    loss: str = "auto"
    batch_size: int | None = Field(None, ge=1)
    epochs: int | None = Field(None, ge=1)
    max_steps: int | None = Field(None, ge=1)
    schedule: ScheduleSpec = ScheduleSpec()
    seed: int = 0
    keep_best: str | None = Field(None, description="a validation metric (e.g. val_f1_macro): the saved model is "
                                                    "the epoch's that scored best on it, not the last")
    early_stopping: EarlyStoppingSpec | None = None
    clip_grad_norm: float | None = Field(None, gt=0, description="scale the global batch's mean gradient down to "
                                                                 "this L2 norm when it is longer")
    class_weights: Literal["balanced"] | dict[str | int, float] | None = Field(
        None, description="weigh each sample's loss by its class: balanced (n_samples / (n_classes x class count), "
                          "scikit-learn's) or a mapping from class label to weight (others 1)")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="cross_entropy and bce: mix this much of the "
                                                               "uniform distribution into the targets")

    @field_validator("keep_best")
    @classmethod
    def _known_metric(cls, value: str | None) -> str | None:
        return None if value is None else metric_name(value)

    @field_validator("class_weights")
    @classmethod
    def _positive_weights(cls, value: str | dict | None) -> str | dict | None:
        if isinstance(value, dict) and not all(0 <= w < FLOAT32_MAX for w in value.values()):
            raise ValueError("class weights must be finite numbers >= 0")
        return value

    @field_validator("loss")
    @classmethod
    def _known_loss(cls, value: str) -> str:
        known = ("auto", *REGRESSION_LOSSES, *CLASSIFICATION_LOSSES)
        if value not in known:
            raise ValueError(f"unknown loss '{value}'; choose one of {', '.join(known)}")
        return value

    @field_validator("lr", "weight_decay")
    @classmethod
    def _fits_float32(cls, value: float) -> float:
        if not value < FLOAT32_MAX:   # also catches inf and nan
            raise ValueError(f"{value:g} is not a finite float32 number, which the optimizers compute in "
                             "(learning rates are usually between 1e-5 and 1)")
        return value

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in value):
            raise ValueError("both betas must be in [0, 1)")
        return value

    @model_validator(mode="after")
    def _batch_fits_optimizer(self) -> TrainSpec:
        if self.optimizer == "gd" and self.batch_size is not None:
            raise FieldError(("train", "batch_size"), "optimizer gd always uses the whole training set as its batch; "
                             "remove train.batch_size or use optimizer sgd")
        if self.epochs is None and self.max_steps is None:
            self.epochs = 10
        return self


class WorkersSpec(_Strict):
    """How many data-parallel workers the job may run on."""

    min: int = Field(1, ge=1)
    max: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> WorkersSpec:
        if self.min > self.max:
            raise FieldError(("resources", "workers", "min"),
                             f"workers.min ({self.min}) is larger than workers.max ({self.max})")
        return self


class PreemptionSpec(_Strict):
    """Where each worker learns that the cloud is taking its node back (elastrain.elastic.preemption)."""

    source: Literal["aws", "gcp"] = Field(description="the shape of the notice: AWS spot instance-action, or "
                                                      "GCP's preempted flag")
    url: str | None = Field(None, description="the node's metadata endpoint; default the cloud's own")
    poll_s: float = Field(1.0, gt=0, le=60, description="seconds between two looks at the endpoint")


_MEMORY_UNITS = {"": 1, "mib": 1, "mb": 1e6 / 2**20, "gib": 1024, "gb": 1e9 / 2**20}


def _memory_mib(value: object) -> object:
    """A memory size as MiB: a number is MiB; a string is a number with MiB, MB, GiB or GB."""
    if not isinstance(value, str):
        return value
    text = value.strip().lower().replace(" ", "")
    number = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text[len(number):]
    if unit not in _MEMORY_UNITS or not number:
        raise ValueError(f"{value!r} is not a memory size: write e.g. 1536 (MiB), '1536MiB', '2GiB' or '2GB'")
    return float(number) * _MEMORY_UNITS[unit]


class ResourcesSpec(_Strict):
    """Compute the job asks for."""

    workers: WorkersSpec = WorkersSpec()
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)
    memory_per_worker: Annotated[float | None, BeforeValidator(_memory_mib)] = Field(
        None, gt=0,
        description="the memory one worker may use, in MiB (or '2GiB', '2GB'): Ray places a worker only on a node "
                    "with this much of its memory resource unreserved, and reserves it; default none (workers are "
                    "placed by their CPUs alone). A worker on sharded data needs about 500 MiB plus two shuffle "
                    "windows' rows of its share (docs/streaming.md), whatever the data set's size")
    wait_timeout_s: float = Field(300.0, gt=0, description="how long to wait for workers.min workers to start")
    hang_timeout_s: float = Field(
        30.0, ge=1, le=86_400,
        description="a worker that completes no step for this long while its peers wait (a stopped, wedged or "
                    "unreachable process) is killed and the job goes on without it")
    retries_per_step: int = Field(
        3, ge=0, le=100,
        description="how often the group may lose workers and re-form without completing a step before the job fails")
    warm_standby: bool = Field(
        True, description="keep worker processes started and loaded, holding no CPU (one started ahead, and the "
                          "workers that left on a scale-in, up to workers.max in all), so that the job grows (or "
                          "replaces a lost worker) in well under a second instead of the seconds a new process "
                          "takes; each costs the memory of one worker, and a new one a few seconds of CPU while it "
                          "loads (CPU jobs whose workers.max > workers.min, once they run below workers.max)")
    preemption_notices: PreemptionSpec | None = Field(
        None, description="watch each node's cloud metadata endpoint: a worker whose node is about to be "
                          "taken leaves the group at the next step boundary, before the node is gone")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="where a worker trains: auto is the GPU when gpus_per_worker > 0, else the CPU; "
                            "cpu keeps the model on the CPU even on a GPU")

    @model_validator(mode="after")
    def _device_has_gpus(self) -> ResourcesSpec:
        if self.device == "cuda" and self.gpus_per_worker == 0:
            raise FieldError(("resources", "device"),
                             "device is cuda but gpus_per_worker is 0: set gpus_per_worker (e.g. 1) or device: auto")
        return self

    @property
    def on_gpu(self) -> bool:
        """Whether each worker trains on a CUDA device (and the group's collective is NCCL)."""
        return self.device == "cuda" or (self.device == "auto" and self.gpus_per_worker > 0)

    @property
    def memory_bytes(self) -> int:
        """The memory a worker reserves on Ray (its `memory` resource), in bytes; 0 for none."""
        return int(self.memory_per_worker * 2**20) if self.memory_per_worker else 0


class CheckpointSpec(_Strict):
    """When and where durable checkpoints are written."""

    every_steps: int | None = Field(None, ge=1)
    every_seconds: float | None = Field(None, gt=0)
    keep: int = Field(3, ge=1)
    dir: str | None = None


class JobSpec(_Strict):
    """A whole training job."""

    name: str = Field("job", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    plugins: list[str] = Field(default_factory=list, description="modules that register more model kinds or data "
                                                                 "sources (elastrain.plugins), imported first")
    data: DataSpec = DataSpec()
    model: ModelSpec = MlpModelSpec()
    train: TrainSpec = TrainSpec()
    resources: ResourcesSpec = ResourcesSpec()
    checkpoint: CheckpointSpec = CheckpointSpec()
    tune: TuneSpec | None = Field(None, description="a hyperparameter study over this job (`elastrain tune`); "
                                                    "`elastrain run` trains the job as it is and ignores it")
    federated: FederatedSpec | None = Field(None, description="train in rounds over clients that keep their data "
                                                              "(`elastrain federated simulate`)")

    @model_validator(mode="before")
    @classmethod
    def _import_plugins(cls, raw: object) -> object:
        """Import the spec's plugins before its sections are read, so their kinds are known."""
        if isinstance(raw, dict) and isinstance(raw.get("plugins"), list):
            import_plugins(str(name) for name in raw["plugins"])
        return raw

    @model_validator(mode="after")
    def _loss_fits_model(self) -> JobSpec:
        kind, task = self.model.kind, self.model.task
        if kind in LOSSES_BY_MODEL and task != "auto":
            natural = "regression" if kind == "linear" else "classification"
            if task != natural:
                raise FieldError(("model", "task"), f"model '{kind}' does {natural}, not {task}; "
                                 f"set model.task to {natural} or auto, or use model mlp")
        allowed = allowed_losses(self.model.kind, self.model.task)
        if self.train.loss != "auto" and self.train.loss not in allowed:
            raise FieldError(
                ("train", "loss"),
                f"loss '{self.train.loss}' does not fit model '{self.model.kind}'"
                + ("" if self.model.task == "auto" else f" for task {self.model.task}")
                + f"; use one of {', '.join(allowed)}"
            )
        if not self.task_from_target:   # otherwise the data decides, and the trainer checks (train.losses)
            check_loss_options(self.train, self.loss)
        return self

    @property
    def loss(self) -> str:
        """The loss to train with, with `auto` resolved."""
        if self.train.loss != "auto":
            return self.train.loss
        return allowed_losses(self.model.kind, self.task)[0]

    @property
    def task(self) -> str:
        """`classification` or `regression`: model.task, else what the model or the loss does, else the
        data source's task; classification when all of them leave it open (see :attr:`task_from_target`)."""
        if self.model.task != "auto":
            return self.model.task
        fixed = (self.train.loss,) if self.train.loss != "auto" else LOSSES_BY_MODEL.get(self.model.kind)
        if fixed:
            return "regression" if fixed[0] in REGRESSION_LOSSES else "classification"
        return self.data.task or "classification"

    @property
    def epochs_at_most(self) -> int:
        """The epochs the job trains at most, as pruners count them: a tree model's rounds (a round is
        an epoch), else train.epochs, else 1 (a job bounded by steps alone)."""
        if isinstance(self.model, TreeModelSpec):
            return self.model.boosting_rounds
        return self.train.epochs or 1

    @property
    def task_from_target(self) -> bool:
        """Whether neither model, loss nor data source decides the task, so the target's values must."""
        return (self.model.task == "auto" and self.train.loss == "auto" and self.model.kind not in LOSSES_BY_MODEL
                and self.data.task is None)


def check_loss_options(train: TrainSpec, loss: str) -> None:
    """Check that the loss can take train.class_weights and train.label_smoothing.

    Raises:
        FieldError: class weights with a regression loss, or label smoothing with a loss that has
            no probabilities to smooth.
    """
    if train.class_weights is not None and loss in REGRESSION_LOSSES:
        raise FieldError(("train", "class_weights"), f"class weights apply to classification; the loss is {loss}: "
                         "remove train.class_weights")
    if train.label_smoothing > 0 and loss not in ("cross_entropy", "bce"):
        raise FieldError(("train", "label_smoothing"), f"label smoothing applies to losses cross_entropy and bce, "
                         f"not {loss}: remove train.label_smoothing or change train.loss")


def allowed_losses(model_kind: str, task: str = "auto") -> tuple[str, ...]:
    """The losses a model kind can train with, default first."""
    if model_kind in LOSSES_BY_MODEL:
        return LOSSES_BY_MODEL[model_kind]
    if task == "regression":
        return REGRESSION_LOSSES
    if task == "classification":
        return CLASSIFICATION_LOSSES
    return CLASSIFICATION_LOSSES + REGRESSION_LOSSES
