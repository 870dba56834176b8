"""Sharded data streamed to the workers: no process holds the whole data set.

The driver lists the shards (metadata only), draws the validation split by a hash of each row's
id, and makes one streamed pass over the training rows for the preprocessing statistics (feature
means and spreads, the classes), merged exactly in piece order; the result is the job's
`ShardManifest`, written into its spec so that every worker and a resume see the same data.
Each worker then reads only the pieces it computes (`data.stream_order`), prefetched in
background threads.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from elastrain.data.plan import PreparePlan
from elastrain.data.prepared import LABEL, read_plan, shard_manifest
from elastrain.data.preprocess import Preprocessor
from elastrain.data.rows import EVAL_CHUNK, Share
from elastrain.data.shards import ShardInfo, list_shards, read_piece, shard_info
from elastrain.data.stream_order import batch_place, epoch_plan, pieces_of
from elastrain.errors import UserError
from elastrain.spec import DataSpec, JobSpec, ShardManifest

# Distinct target values the statistics pass keeps count of; a numeric target with more is a quantity.
MAX_CLASSES = 1000
# A target with more distinct values than both of these is a quantity rather than classes (as in memory).
MANY_VALUES = 20
MANY_VALUES_SHARE = 0.05
READ_THREADS = 4
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def validation_mask(ids: np.ndarray, seed: int, fraction: float) -> np.ndarray:
    """Which rows (by global row id, int64) are in the validation split: a hash of (id, seed)
    below `fraction` of its range (see `seeded_draw`), so the split is fixed by the ids alone and
    holds `fraction` of the rows up to sampling noise."""
    with np.errstate(over="ignore"):
        return seeded_draw(ids.astype(np.uint64) * _GOLDEN, seed, fraction)


def seeded_draw(keys: np.ndarray, seed: int, fraction: float) -> np.ndarray:
    """Whether each key (uint64 (n,)) is drawn: splitmix64's finalizer (Steele et al. 2014) of
    the key and the seed, below `fraction` of its range; the same key and seed, the same answer."""
    with np.errstate(over="ignore"):
        z = keys + np.uint64(seed) * np.uint64(0xD1B54A32D192ED03)
        z ^= z >> np.uint64(30)
        z *= np.uint64(0xBF58476D1CE4E5B9)
        z ^= z >> np.uint64(27)
        z *= np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)) < np.uint64(int(fraction * 2**53))


@dataclass
class _Moments:
    """Count, mean, sum of squared deviations, min and max per feature (float64)."""

    n: int
    mean: np.ndarray
    m2: np.ndarray
    low: np.ndarray
    high: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray) -> _Moments:
        values = x.astype(np.float64)
        if not len(values):
            width = x.shape[1]
            return cls(0, np.zeros(width), np.zeros(width), np.full(width, np.inf), np.full(width, -np.inf))
        mean = values.mean(axis=0)
        return cls(len(values), mean, ((values - mean) ** 2).sum(axis=0), values.min(axis=0), values.max(axis=0))

    def merge(self, other: _Moments) -> _Moments:
        """Both parts together (Chan, Golub and LeVeque 1979's pairwise update)."""
        n = self.n + other.n
        if not other.n or not self.n:
            return other if not self.n else self
        delta = other.mean - self.mean
        return _Moments(n, self.mean + delta * other.n / n, self.m2 + other.m2 + delta ** 2 * self.n * other.n / n,
                        np.minimum(self.low, other.low), np.maximum(self.high, other.high))


@dataclass
class _PieceStats:
    moments: _Moments
    targets: dict    # value -> training rows (empty when there are more than MAX_CLASSES values)
    integral: bool   # every target value is a whole number (or text)
    too_many: bool   # more than MAX_CLASSES distinct target values


def _piece_stats(x: np.ndarray, y: np.ndarray) -> _PieceStats:
    values, counts = np.unique(y, return_counts=True)
    numeric = values.dtype.kind in "iufb"
    as_float = np.asarray(values, np.float64) if numeric else None
    integral = not numeric or bool(np.all(as_float == np.round(as_float)))
    too_many = len(values) > MAX_CLASSES
    targets = {} if too_many else dict(zip(values.tolist(), counts.tolist(), strict=True))
    return _PieceStats(_Moments.of(x), targets, integral, too_many)


class _Pieces:
    """The data set's pieces in one numbering: shard and piece within it, first row id, rows."""

    def __init__(self, manifest: ShardManifest, kind: str, sep: str) -> None:
        self.kind = kind
        self.sep = sep
        self.shards = [ShardInfo(url, tuple(rows), ()) for url, rows in zip(manifest.shards, manifest.pieces,
                                                                             strict=True)]
        self.where: list[tuple[int, int]] = []   # piece id -> (shard, piece in shard)
        self.first_id: list[int] = []
        self.bytes: list[int] = []
        row = 0
        for s, rows in enumerate(manifest.pieces):
            for p, count in enumerate(rows):
                self.where.append((s, p))
                self.first_id.append(row)
                self.bytes.append(manifest.piece_bytes[s][p])
                row += count

    def __len__(self) -> int:
        return len(self.where)

    def read(self, piece: int, features: list[str], target: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw features (n, F), raw targets (n,) and row ids (n,) of piece `piece`."""
        s, p = self.where[piece]
        x, y = read_piece(self.kind, self.shards[s], p, features, target, self.sep)
        return x, y, np.arange(self.first_id[piece], self.first_id[piece] + len(y), dtype=np.int64)


def describe_shards(data: DataSpec) -> str:
    """One line on the shards `data.source` matches, from their metadata alone (for `validate`).

    Raises:
        UserError: as `build_manifest`, short of reading rows.
    """
    kind = data.source_kind
    infos = _list_infos(kind, data.source_arg, shard_separator(data))
    _check_schemas(kind, infos, data.target)
    rows = sum(info.rows for info in infos)
    width = infos[0].width - (0 if kind == "npy" else 1)
    megabytes = sum(sum(info.piece_bytes) for info in infos) / 1e6
    return (f"data: {len(infos)} {kind} shards, {rows:,} rows in {sum(len(i.pieces) for i in infos)} pieces, "
            f"{megabytes:,.1f} MB, {width} features{'' if kind == 'npy' else f' and the target {data.target!r}'}")


def shard_separator(data: DataSpec) -> str:
    """The separator of CSV shards: data.csv.sep, else a comma."""
    return data.csv.sep or ","


def _list_infos(kind: str, pattern: str, sep: str) -> list[ShardInfo]:
    urls = list_shards(kind, pattern)
    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(lambda url: shard_info(kind, url, sep), urls))


def build_manifest(spec: JobSpec) -> ShardManifest:
    """List `spec`'s shards, draw the validation split and pass once over the training rows for the
    preprocessing statistics (see the module's docstring).

    Raises:
        UserError: no shard matches; a shard cannot be read, has another schema, lacks the target
            or has a column that is not a number (each names the shard).
    """
    data = spec.data
    kind = data.source_kind
    began = time.perf_counter()
    sep = shard_separator(data)
    infos = _list_infos(kind, data.source_arg, sep)
    urls = [info.url for info in infos]
    features = _check_schemas(kind, infos, data.target)
    seed = data.split_seed if data.split_seed is not None else spec.train.seed
    width = infos[0].width - (0 if kind == "npy" else 1)
    manifest = ShardManifest(shards=urls, pieces=[list(i.pieces) for i in infos],
                             piece_bytes=[list(i.piece_bytes) for i in infos], features=features, width=width,
                             seed=seed)
    pieces = _Pieces(manifest, kind, sep)
    jobs = [(s, p, pieces.first_id[i]) for i, (s, p) in enumerate(pieces.where)]
    results = _summarize(kind, sep, infos, jobs, features, data.target, seed, data.validation_fraction)
    counts = [count for count, _ in results]
    moments = results[0][1].moments
    for _, stats in results[1:]:
        moments = moments.merge(stats.moments)
    targets: dict = {}
    for _, stats in results:
        for value, count in stats.targets.items():
            targets[value] = targets.get(value, 0) + count
    too_many = any(s.too_many for _, s in results) or len(targets) > MAX_CLASSES
    distinct = math.inf if too_many else len(targets)
    classification = _is_classification(spec, targets, distinct, all(s.integral for _, s in results), sum(counts))
    if spec.task_from_target:
        spec.model.task = "classification" if classification else "regression"
    if spec.task == "classification" and too_many:
        raise UserError(f"the target '{data.target}' has more than {MAX_CLASSES} distinct values", where=data.source,
                        fix="set model.task: regression, or give a target with fewer classes")
    center, scale = _scaling(moments, data.scaling, data.scaling_per)
    classes = sorted(targets) if spec.task == "classification" else None
    train, start = [], 0
    for rows in manifest.pieces:
        train.append(counts[start:start + len(rows)])
        start += len(rows)
    return manifest.model_copy(update={
        "train": train, "center": center, "scale": scale, "classes": classes,
        "feature_mean": moments.mean.tolist(), "feature_var": (moments.m2 / max(moments.n, 1)).tolist(),
        "class_counts": [targets[c] for c in classes] if classes else None,
        "stats_s": round(time.perf_counter() - began, 3)})


def _summarize(kind: str, sep: str, infos: list[ShardInfo], jobs: list[tuple[int, int, int]], features: list[str],
               target: str, seed: int, fraction: float) -> list[tuple[int, _PieceStats]]:
    """Each piece's training rows and their statistics, in `jobs` order ((shard, piece, first row
    id) each): on Ray tasks spread over the nodes when this process is connected to a Ray cluster of
    several nodes, else on threads of this process.

    On one node the threads read as fast as tasks would, and with this process's storage settings
    (an fsspec endpoint or credentials set in it do not reach Ray's worker processes); tasks on
    other nodes read with those nodes' settings, as the job's workers there do."""
    per_batch = max(1, len(jobs) // (4 * READ_THREADS))
    batches = [jobs[start:start + per_batch] for start in range(0, len(jobs), per_batch)]
    args = (kind, sep, infos, features, target, seed, fraction)
    ray = sys.modules.get("ray")   # not imported: not connected (and not worth importing for the check)
    if ray is None or not ray.is_initialized() or sum(node["Alive"] for node in ray.nodes()) < 2:
        with ThreadPoolExecutor(READ_THREADS) as pool:
            return [r for part in pool.map(lambda batch: _piece_summaries(batch, *args), batches) for r in part]
    # No CPU reserved: a pass that waited for CPUs other jobs hold would look like a hang.
    remote = ray.remote(num_cpus=0, max_retries=1)(_piece_summaries)
    try:
        return [r for part in ray.get([remote.remote(batch, *args) for batch in batches]) for r in part]
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, UserError):
            raise exc.cause from None
        raise


def _piece_summaries(jobs: list[tuple[int, int, int]], kind: str, sep: str, infos: list[ShardInfo],
                     features: list[str], target: str, seed: int, fraction: float) -> list[tuple[int, _PieceStats]]:
    """(training rows, their statistics) of each piece of `jobs`.

    Raises:
        UserError: a piece cannot be read, or a feature is missing or infinite (naming the row).
    """
    found = []
    for shard, piece, first in jobs:
        x, y = read_piece(kind, infos[shard], piece, features, target, sep)
        finite = np.isfinite(x).all(axis=1)
        if not finite.all():
            raise UserError(f"row {int(np.argmin(finite))} of piece {piece} has a missing or infinite feature",
                            where=infos[shard].url, fix="fill in or drop such rows before training")
        train = ~validation_mask(np.arange(first, first + len(y), dtype=np.int64), seed, fraction)
        found.append((int(train.sum()), _piece_stats(x[train], y[train])))
    return found


def _check_schemas(kind: str, infos: list[ShardInfo], target: str) -> list[str]:
    """The feature columns, in the first shard's order.

    Raises:
        UserError: a shard's columns differ from the first's, the target is missing, or a feature
            is not a number.
    """
    first = infos[0]
    for info in infos[1:]:
        if info.columns != first.columns:
            ours, theirs = dict(first.columns), dict(info.columns)
            diff = sorted(set(ours.items()) ^ set(theirs.items()))
            raise UserError(f"the shard's columns differ from {first.url}'s: {', '.join(f'{n} {t}' for n, t in diff)}",
                            where=info.url, fix="write every shard with one schema")
    if kind == "npy":
        return []
    names = [name for name, _ in first.columns]
    if target not in names:
        raise UserError(f"no target column '{target}' (columns: {', '.join(names[:20])})", where=first.url,
                        fix="set data.target to the label column")
    text = [name for name, kind_ in first.columns if name != target and not _numeric(kind_)]
    if text:
        raise UserError(f"column '{text[0]}' is {dict(first.columns)[text[0]]}, not a number; categorical and text "
                        "columns of sharded data are not supported yet", where=first.url,
                        fix="encode it as numbers when writing the shards, or drop it")
    return [name for name in names if name != target]


def _numeric(arrow_type: str) -> bool:
    return arrow_type.startswith(("int", "uint", "float", "double", "halffloat", "bool", "decimal"))


def _is_classification(spec: JobSpec, targets: dict, distinct: float, integral: bool, rows: int) -> bool:
    """The task the spec names, else the target's (as `dataset.infer_task` decides in memory)."""
    if not spec.task_from_target:
        return spec.task == "classification"
    if any(isinstance(value, str) for value in targets):
        return True
    return integral and not (distinct > MANY_VALUES and distinct > MANY_VALUES_SHARE * rows)


def _scaling(moments: _Moments, scaling: str, per: str) -> tuple[list[float], list[float]]:
    """Center and scale per feature (or one of each, `per: global`), as `preprocess.fit_scaling`
    fits them on in-memory rows."""
    width = len(moments.mean)
    if scaling == "none" or not moments.n:
        return [0.0] * width, [1.0] * width
    if per == "global":
        total = moments.n * width
        mean = float(moments.mean.mean())
        m2 = float(moments.m2.sum() + moments.n * ((moments.mean - mean) ** 2).sum())
        low, spread = ((mean, math.sqrt(m2 / total)) if scaling == "standardize"
                       else (float(moments.low.min()), float(moments.high.max() - moments.low.min())))
        return [low], [spread if spread > 0 else 1.0]
    if scaling == "standardize":
        low, spread = moments.mean, np.sqrt(moments.m2 / moments.n)
    else:
        low, spread = moments.low, moments.high - moments.low
    return low.tolist(), np.where(spread > 0, spread, 1.0).tolist()


@dataclass(frozen=True)
class _DecodedPiece:
    """A piece as a member holds it while training from it.

    Attributes:
        x: raw features of every row of the piece, float32 (n, F) (standardized once gathered).
        y: encoded targets of every row (n,): class ids int64, or values float32.
        train_rows: where the piece's training rows lie among its rows, in row order, int64 (t,).
        first_id: the global row id of the piece's first row.
    """

    x: np.ndarray
    y: np.ndarray
    train_rows: np.ndarray
    first_id: int


class ShardedSource:
    """A job's sharded data (`DataSource`): training rows streamed by global batch, each member
    reading the pieces it computes; validation rows by hash of the row id.

    Counters for progress: `bytes_read` (from storage, this process), `wait_s` (time the steps
    waited on a piece not yet read).
    """

    def __init__(self, spec: JobSpec) -> None:
        data = spec.data
        prepared = data.source_kind == "prepared"
        if data.manifest is None:
            data.manifest = shard_manifest(spec) if prepared else build_manifest(spec)
        self.manifest = manifest = data.manifest
        self.spec = spec
        self.target = LABEL if prepared else data.target
        self.pieces = _Pieces(manifest, "parquet" if prepared else data.source_kind, shard_separator(data))
        self.train_counts = tuple(count for rows in manifest.train for count in rows)
        self._n_train = sum(self.train_counts)
        self.window = data.shuffle_window
        self.task = "classification" if manifest.classes is not None else "regression"
        self.n_classes = len(manifest.classes) if manifest.classes is not None else None
        self.input_shape = (manifest.width,)
        plan = read_plan(data.source_arg) if prepared else None
        columns = PreparePlan.from_dict(plan).columns if plan else list(manifest.features)
        self.preprocessor = Preprocessor("table" if manifest.features else "array", self.input_shape, columns, {},
                                         manifest.center, manifest.scale, manifest.classes, plan=plan)
        self.warnings: list[str] = []
        self._center = np.asarray(manifest.center, np.float32)
        self._scale = np.asarray(manifest.scale, np.float32)
        self._classes = np.asarray(manifest.classes) if manifest.classes is not None else None
        self.bytes_read = 0
        self.wait_s = 0.0
        self._cache: dict[int, Future] = {}
        self._lock = threading.Lock()
        self._readers = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="shard-reader")

    @property
    def n_train(self) -> int:
        return self._n_train

    @property
    def n_val(self) -> int:
        return sum(sum(rows) for rows in self.manifest.pieces) - self.n_train

    def _decode(self, piece: int) -> _DecodedPiece:
        """One piece as the steps take rows from it (see `_DecodedPiece`)."""
        x, y, ids = self._read(piece)
        train = np.flatnonzero(~self._validation(piece, ids))
        return _DecodedPiece(x, self._encode(y), train, self.pieces.first_id[piece])

    def _validation_rows(self, piece: int) -> tuple[np.ndarray, np.ndarray]:
        """One piece's validation rows: model-ready features and targets."""
        x, y, ids = self._read(piece)
        keep = self._validation(piece, ids)
        return self._standardize(x[keep]), self._encode(y[keep])

    def _validation(self, piece: int, ids: np.ndarray) -> np.ndarray:
        """Which of piece `piece`'s rows (ids (n,)) are validation rows: by a hash of their ids, or
        (a prepared folder) all of a validation shard's and none of a training shard's."""
        first = self.manifest.validation_from
        if first is not None:
            return np.full(len(ids), piece >= first)
        return validation_mask(ids, self.manifest.seed, self.spec.data.validation_fraction)

    def _read(self, piece: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A piece's raw features, raw targets and row ids, counted in `bytes_read`."""
        rows = self.pieces.read(piece, list(self.manifest.features), self.target)
        with self._lock:
            self.bytes_read += self.pieces.bytes[piece]
        return rows

    def _standardize(self, x: np.ndarray) -> np.ndarray:
        """Raw float32 features (n, F) made model-ready, in place: (x - center) / scale in float32,
        the operations the in-memory path applies."""
        np.subtract(x, self._center, out=x)
        np.divide(x, self._scale, out=x)
        return x

    def _encode(self, y: np.ndarray) -> np.ndarray:
        if self._classes is None:
            return y.astype(np.float32)
        return np.searchsorted(self._classes, y).astype(np.int64)

    def _want(self, wanted: list[int]) -> None:
        """Read `wanted` pieces in the background (in order), and forget the others."""
        with self._lock:
            keep = set(wanted)
            for piece in [p for p in self._cache if p not in keep]:
                self._cache.pop(piece).cancel()
            for piece in wanted:
                if piece not in self._cache:
                    self._cache[piece] = self._readers.submit(self._decode, piece)

    def share(self, seed: int, epoch: int, position: int, batch_size: int, rank: int, world_size: int) -> Share:
        """This member's rows of the global batch at `position` of epoch `epoch`: those lying in
        the pieces it reads (see `data.stream_order`)."""
        plan = epoch_plan(self.train_counts, seed, epoch, self.window)
        place = batch_place(plan, seed, epoch, position, batch_size)
        window = plan.window_of(position)
        if window + 1 < plan.n_windows:
            ahead = pieces_of(plan, window + 1, rank, world_size)
        elif epoch + 1 < self._epochs(batch_size):
            ahead = pieces_of(epoch_plan(self.train_counts, seed, epoch + 1, self.window), 0, rank, world_size)
        else:   # the job ends with this epoch: nothing to read ahead
            ahead = np.zeros(0, np.int64)
        mine = place.owned_by(rank, world_size)
        pieces, rows = place.piece[mine], place.row[mine]
        held = np.unique(pieces).tolist()
        self._want([*pieces_of(plan, window, rank, world_size).tolist(), *ahead.tolist(), *held])
        x = np.empty((len(pieces), self.input_shape[0]), np.float32)
        y = np.empty(len(pieces), np.int64 if self._classes is not None else np.float32)
        ids = np.empty(len(pieces), np.int64)
        for piece in held:
            at = np.flatnonzero(pieces == piece)
            with self._lock:
                future = self._cache[piece]
            began = time.perf_counter()
            decoded = future.result()
            self.wait_s += time.perf_counter() - began
            where = decoded.train_rows[rows[at]]
            x[at], y[at], ids[at] = decoded.x[where], decoded.y[where], where + decoded.first_id
        # Standardized here rather than when read: only the rows trained on, in one pass.
        return Share(ids, self._standardize(x), y, len(place.piece))

    def train_chunks(self, seed: int, rank: int, world_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Member `rank` of `world_size`'s share of all the training rows, a piece at a time as
        (model-ready features (n, F), targets (n,)): the pieces it reads over epoch 0 of `seed`
        (as `share` of the whole epoch would), each piece's rows in their stored order. The
        members' shares are disjoint and cover the training split; at most `READ_THREADS` pieces
        are read ahead, so memory holds a few pieces however large the share."""
        plan = epoch_plan(self.train_counts, seed, 0, self.window)
        mine = [int(piece) for window in range(plan.n_windows) for piece in pieces_of(plan, window, rank, world_size)]
        ahead: dict[int, Future] = {}
        for index, piece in enumerate(mine):
            for next_piece in mine[index:index + READ_THREADS]:
                if next_piece not in ahead:
                    ahead[next_piece] = self._readers.submit(self._decode, next_piece)
            began = time.perf_counter()
            decoded = ahead.pop(piece).result()
            self.wait_s += time.perf_counter() - began
            yield self._standardize(decoded.x[decoded.train_rows]), decoded.y[decoded.train_rows]

    def _epochs(self, batch_size: int) -> float:
        """The epochs the job starts, by train.epochs and train.max_steps (early stopping may end it sooner)."""
        train = self.spec.train
        by_steps = math.ceil(train.max_steps / math.ceil(self.n_train / batch_size)) if train.max_steps else math.inf
        return min(train.epochs or math.inf, by_steps)

    def batch_ids(self, seed: int, epoch: int, position: int, batch_size: int, rank: int,
                  world_size: int) -> tuple[np.ndarray, np.ndarray]:
        """See `DataSource.batch_ids`: row ids from the pieces' row counts and the split's hash alone."""
        place = batch_place(epoch_plan(self.train_counts, seed, epoch, self.window), seed, epoch, position,
                            batch_size)
        ids = np.empty(len(place.piece), np.int64)
        for piece in np.unique(place.piece):
            at = np.flatnonzero(place.piece == piece)
            ids[at] = self._train_ids(int(piece))[place.row[at]]
        return ids, ids[place.owned_by(rank, world_size)]

    def _train_ids(self, piece: int) -> np.ndarray:
        """The row ids of a piece's training rows, in row order."""
        s, p = self.pieces.where[piece]
        first = self.pieces.first_id[piece]
        ids = np.arange(first, first + self.manifest.pieces[s][p], dtype=np.int64)
        return ids[~self._validation(piece, ids)]

    def val_chunks(self, rank: int, world_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """This member's validation rows, a piece at a time: the pieces whose id is `rank` modulo
        `world_size` (every validation row is scored by exactly one member)."""
        for piece in range((self.manifest.validation_from or 0) + rank, len(self.pieces), world_size):
            x, y = self._validation_rows(piece)
            for start in range(0, len(y), EVAL_CHUNK):
                yield x[start:start + EVAL_CHUNK], y[start:start + EVAL_CHUNK]

    def feature_variance(self) -> float:
        """The variance of the preprocessed training features, all values together (from the statistics)."""
        manifest = self.manifest
        scale = np.asarray(manifest.scale) if len(manifest.scale) > 1 else np.full(self.input_shape[0],
                                                                                    manifest.scale[0])
        center = np.asarray(manifest.center) if len(manifest.center) > 1 else np.full(self.input_shape[0],
                                                                                      manifest.center[0])
        mean = (np.asarray(manifest.feature_mean) - center) / scale
        var = np.asarray(manifest.feature_var) / scale ** 2
        return float((var + mean ** 2).mean() - mean.mean() ** 2)

    def class_counts(self) -> np.ndarray | None:
        """Training rows per class id (None for regression)."""
        return None if self.manifest.class_counts is None else np.asarray(self.manifest.class_counts, np.int64)

    def fingerprint(self) -> str:
        """sha256 of the manifest: the shards, their pieces and sizes, the split and the statistics."""
        return hashlib.sha256(json.dumps(self.manifest.model_dump(mode="json", exclude={"stats_s"}),
                                         sort_keys=True).encode()).hexdigest()
