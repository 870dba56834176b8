"""`elastrain prepare`: one distributed pass over a raw table on Ray Data that fits the
preprocessing on its training rows and writes model-ready training and validation shards.

Two passes over the input, each streamed block by block on Ray Data's workers (no process holds
the table): the first computes each block's statistics (`elastrain.prep.fit.block_stats`), merged
in the blocks' order into the plan; the second applies the plan to every block and writes its
training and validation rows as Parquet. Ray Data keeps the blocks' order (`preserve_order`) and
cuts the input into the same blocks whatever the number of workers, so 1 and N workers give the
same plan and the same shards, bit for bit. Output, under the folder given:

    train/part-00000.parquet ...       f0 .. f{F-1} float32 and `label` (the raw target)
    validation/part-00000.parquet ...
    preprocessing.json                 the plan (`PreparePlan.to_json`): apply it to raw rows
    manifest.json                      `PreparedManifest`

(`elastrain.data.prepared` defines the layout, and reads it as a job's data: `prepared:FOLDER`.)
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from elastrain.data.plan import PreparePlan, TextFit
from elastrain.data.prepared import LABEL, MANIFEST_FILE, PLAN_FILE, PreparedManifest, feature_column
from elastrain.data.shards import list_shards
from elastrain.data.text import choose_segmentation, segment, train_tokenizer, vocabulary_size
from elastrain.errors import UserError
from elastrain.prep.fit import (
    BlockStats,
    block_stats,
    feature_moments,
    hashed_columns,
    merge_all,
    missing_policy,
    plan_of,
    validation_rows,
)
from elastrain.spec import ColumnSpec, JobSpec

RAW_FORMATS = ("csv", "parquet", "jsonl")


@dataclass(frozen=True)
class _Columns:
    """The raw table's columns as the pass types them."""

    numeric: list[str]
    categorical: list[str]
    text: tuple[str, ...]
    target: str
    target_type: str   # "int64", "float64" or "string"

    @property
    def hashed(self) -> list[str]:
        """The columns whose values draw a row's split."""
        return hashed_columns(self.numeric, self.categorical, self.text, self.target)


Progress = Callable[[str, int, "int | None"], None]


def prepare(spec: JobSpec, out: Path, workers: int | None = None,
            progress: Progress | None = None) -> tuple[PreparedManifest, PreparePlan]:
    """Fit `spec`'s preprocessing on its raw table (`data.source`: `csv:`, `parquet:` or
    `jsonl:` with a file, a glob or a URL) and write the shards under `out` (see the module's
    docstring). `progress(what, rows, total_rows)` is called as each pass's blocks complete (`what`
    says the pass in words; `total_rows` is None where it is not known yet).

    Raises:
        UserError: no input matches; a column's type cannot be told, or its values do not fit it; a
            blank where the column's policy is `error` (naming the file, row and column); a target
            missing from the table.
    """
    import ray.data

    data = spec.data
    kind = data.source_kind
    if kind not in RAW_FORMATS:
        raise UserError(f"'{kind}:' is not a raw table elastrain prepare reads", where="data.source",
                        fix=f"give {', '.join(k + ':FILE_OR_GLOB' for k in RAW_FORMATS)}")
    files = list_shards(kind, data.source_arg)
    columns = _columns(kind, files[0], spec)
    seed = data.split_seed if data.split_seed is not None else spec.train.seed
    # With a validation table of its own, every row of the source trains (a hash below 0: none is drawn).
    fraction = 0.0 if data.validation_source else data.validation_fraction
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    began = time.perf_counter()
    stats_args = {"kind": kind, "columns": columns, "seed": seed, "fraction": fraction}
    size = sum(_sizes(files))
    parts = [BlockStats.from_json(row["stats"]) for row in _each_block(
        _map_blocks(kind, files, columns, workers, _stats_of_block, stats_args),
        f"fitting the statistics ({size / 1e9:.2f} GB in {len(files)} file{'s' * (len(files) > 1)})", progress,
        lambda row: BlockStats.from_json(row["stats"]).rows)]
    stats = merge_all(parts)
    _check_blanks(spec, stats, columns, kind, files)
    plan = plan_of(stats, spec, columns.numeric, columns.categorical, seed)
    if columns.text:
        plan = replace(plan, text=tuple(
            _fit_text(spec, kind, files, columns, name, seed, fraction, workers, progress,
                      stats.rows - stats.validation - stats.no_target) for name in columns.text))
    fitted = time.perf_counter()
    staging = out / f".staging-{uuid.uuid4().hex[:8]}"
    inputs = [(kind, files, fraction)]
    if data.validation_source:   # every row of it validates (a hash below 2**53: all are drawn)
        validation_kind, _, pattern = data.validation_source.partition(":")
        inputs.append((validation_kind, list_shards(validation_kind, pattern), 1.0))
    written = []
    for index, (input_kind, input_files, input_fraction) in enumerate(inputs):
        # The source's blanks were checked above; only the validation table's can stop the write,
        # and only its rows carry their file's path (a column per row costs a fifth of the pass).
        written += _each_block(
            _map_blocks(input_kind, input_files, columns, workers, _write_block,
                        {"kind": input_kind, "columns": columns, "plan_json": plan.to_json(), "staging": str(staging),
                         "fraction": input_fraction}, paths=index > 0),
            "writing the shards", progress, lambda row: int(row["train_rows"]) + int(row["validation_rows"]),
            total=None if data.validation_source else stats.rows - stats.no_target)
    mean, var = feature_moments(plan, stats)
    dropped = sum(int(entry["dropped"]) for entry in written)
    all_files = [name for _, names, _ in inputs for name in names]
    manifest = PreparedManifest(
        inputs=all_files, input_fingerprint=_fingerprint(all_files),
        train=[], validation=[], train_rows=[], validation_rows=[], features=plan.feature_names,
        target=data.target, task="classification" if plan.classes is not None else "regression",
        classes=None if plan.classes is None else list(plan.classes),
        class_counts=None if plan.classes is None else [stats.targets[label] for label in plan.classes],
        feature_mean=mean, feature_var=var,
        rows_in=sum(int(e["train_rows"]) + int(e["validation_rows"]) for e in written) + dropped,
        dropped={"no target": dropped} if dropped else {},
        fit_s=round(fitted - began, 3), write_s=round(time.perf_counter() - fitted, 3), workers=workers)
    out.mkdir(parents=True, exist_ok=True)
    manifest = _publish(out, staging, written, manifest)
    (out / PLAN_FILE).write_text(plan.to_json())
    (out / MANIFEST_FILE).write_text(manifest.to_json())
    return manifest, plan


def _fit_text(spec: JobSpec, kind: str, files: list[str], columns: _Columns, name: str, seed: int, fraction: float,
              workers: int | None, progress: Progress | None, training_rows: int) -> TextFit:
    """Text column `name`'s tokenizer, trained on its `training_rows` training rows, segmented on
    Ray Data's workers and fed to the trainer here in block order."""
    options = (spec.data.columns.get(name) or ColumnSpec(type="text")).text
    mode = options.segment
    if mode == "auto":
        mode = choose_segmentation(_first_texts(kind, files[0], name))
    segmented = _map_blocks(kind, files, columns, workers, _training_texts,
                            {"kind": kind, "columns": columns, "name": name, "mode": mode, "seed": seed,
                             "fraction": fraction})
    batches = (batch["text"].to_pylist() for batch in _each_block(
        segmented.iter_batches(batch_format="pyarrow", batch_size=None), f"training the tokenizer of {name}",
        progress, lambda batch: batch.num_rows, rows=False, total=training_rows))
    tokenizer = train_tokenizer(batches, options.tokenizer, options.vocab_size, options.lowercase)
    return TextFit(name, mode, tokenizer, options.max_length, vocabulary_size(tokenizer))


def _training_texts(table, kind: str, columns: _Columns, name: str, mode: str, seed: int, fraction: float):
    """The block's training rows' texts of column `name`, segmented."""
    import pyarrow as pa

    table = _typed(table, kind, columns)
    keep = ~validation_rows(table, columns.hashed, seed, fraction) & table.column(columns.target).is_valid().to_numpy(
        zero_copy_only=False)
    return pa.table({"text": segment(table.column(name).filter(keep).to_pylist(), mode)})


def _first_texts(kind: str, path: str, name: str, rows: int = 200) -> list[str]:
    """Up to `rows` texts of column `name` from the first rows of a raw file."""
    import fsspec
    import pyarrow.csv as pcsv
    import pyarrow.json as pjson
    import pyarrow.parquet as pq

    with fsspec.open(path, "rb", compression="infer") as handle:
        if kind == "parquet":
            table = pq.ParquetFile(handle).read_row_group(0, columns=[name])
        elif kind == "csv":
            table = pcsv.open_csv(handle, convert_options=pcsv.ConvertOptions(include_columns=[name])).read_next_batch()
        else:
            table = pjson.read_json(handle).select([name])
    return [str(text) for text in table.column(name).to_pylist()[:rows] if text]


def _each_block(dataset, what: str, progress: Progress | None, rows_of: Callable, rows: bool = True,
                total: int | None = None):
    """What a per-block pass returns, in block order (its rows, or with `rows=False` the batches
    of an iterator given), reporting each block's rows (of `total`, where known).

    Raises:
        UserError: a block's worker raised one (its line, not Ray's traceback).
    """
    import ray.exceptions

    try:
        for item in dataset.iter_rows() if rows else dataset:
            if progress:
                progress(what, rows_of(item), total)
            yield item
    except ray.exceptions.RayTaskError as exc:
        cause = exc.cause
        while cause is not None and not isinstance(cause, UserError):
            cause = getattr(cause, "cause", None) or cause.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        raise


def _columns(kind: str, first: str, spec: JobSpec) -> _Columns:
    """The feature columns by type, from the first input's first rows and `data.columns`.

    Raises:
        UserError: no target column; a column named in data.columns that the table lacks; a column
            whose type cannot be told from the first rows.
    """
    import pyarrow.types as pat

    schema = _first_schema(kind, first)
    names = schema.names
    data = spec.data
    if data.target not in names:
        raise UserError(f"no target column '{data.target}' (columns: {', '.join(names[:20])})", where=first,
                        fix="set data.target to the label column")
    unknown = sorted(set(data.columns) - set(names))
    if unknown:
        raise UserError(f"data.columns names {', '.join(unknown)}, which the table lacks", where="data.columns",
                        fix=f"the table's columns: {', '.join(names[:20])}")
    numeric, categorical, text = [], [], []
    for field in schema:
        if field.name == data.target:
            continue
        declared = data.columns[field.name].type if field.name in data.columns else "auto"
        if declared == "skip":
            continue
        if declared == "text":
            text.append(field.name)
            continue
        if declared == "auto" and pat.is_null(field.type):
            raise UserError(f"column '{field.name}' is blank in the first rows, so its type cannot be told",
                            where=first, fix=f"declare it: data.columns.{field.name}.type: numeric or categorical")
        number = pat.is_integer(field.type) or pat.is_floating(field.type) or pat.is_boolean(field.type) \
            or pat.is_decimal(field.type)
        (numeric if declared == "numeric" or (declared == "auto" and number) else categorical).append(field.name)
    target = schema.field(data.target).type
    target_type = "int64" if pat.is_integer(target) or pat.is_boolean(target) else (
        "float64" if pat.is_floating(target) or pat.is_decimal(target) else "string")
    return _Columns(numeric, categorical, tuple(text), data.target, target_type)


def _first_schema(kind: str, path: str):
    """The Arrow schema of the first rows of a raw file (what its reader infers)."""
    import fsspec
    import pyarrow.csv as pcsv
    import pyarrow.json as pjson
    import pyarrow.parquet as pq

    try:
        with fsspec.open(path, "rb", compression="infer") as handle:
            if kind == "parquet":
                return pq.ParquetFile(handle).schema_arrow
            if kind == "csv":
                return pcsv.open_csv(handle, convert_options=pcsv.ConvertOptions(strings_can_be_null=True)).schema
            return pjson.read_json(handle).schema
    except Exception as exc:   # a missing, truncated or foreign file
        raise UserError(f"cannot read the table: {type(exc).__name__}: {exc}", where=path,
                        fix=f"check that it is a whole {kind} file") from None


def _map_blocks(kind: str, files: list[str], columns: _Columns, workers: int | None, function: Callable,
                arguments: dict, paths: bool = False):
    """`function(block, **arguments)` over each block of the raw table (Ray Data, at most
    `workers` tasks at once): the table's columns the pass uses (columns skipped are not parsed,
    where the format allows it), with each file's path per row (a column `path`) when `paths`.

    The blocks are the same whatever `workers`: a read task per file (fused with `function`; a
    split into more blocks stops that fusion, measured 1.5x slower), its rows cut into blocks by
    size alone. So a table given as one file is read by one task.
    """
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import ray.data

    tasks = None if workers is None else min(workers, len(files))

    used = [*columns.numeric, *columns.categorical, *columns.text, columns.target]
    if kind == "csv":
        types = {name: pa.float64() for name in columns.numeric}
        types |= {name: pa.string() for name in (*columns.categorical, *columns.text)}
        types[columns.target] = pa.type_for_alias(columns.target_type)
        table = ray.data.read_csv(files, include_paths=paths, concurrency=tasks, override_num_blocks=len(files),
                                  convert_options=pcsv.ConvertOptions(
                                      column_types=types, strings_can_be_null=True, include_columns=used))
    elif kind == "parquet":
        table = ray.data.read_parquet(files, columns=used, include_paths=paths, concurrency=tasks,
                                      override_num_blocks=len(files))
    else:
        table = ray.data.read_json(files, include_paths=paths, concurrency=tasks, override_num_blocks=len(files))
    return table.map_batches(function, fn_kwargs=arguments, batch_format="pyarrow", batch_size=None,
                             concurrency=tasks)


def _typed(table, kind: str, columns: _Columns):
    """`table` with numeric columns float64, categorical ones strings (blank strings null), and
    the target in the type the first rows gave it."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if kind == "csv":
        return table
    arrays, names = [], []
    for name in (*columns.numeric, *columns.categorical, *columns.text, columns.target,
                 *(["path"] if "path" in table.column_names else [])):
        column = table.column(name)
        if name in columns.text:
            column = pc.cast(column, pa.string())
        elif name in columns.numeric:
            column = pc.cast(column, pa.float64())
        elif name in columns.categorical:
            column = pc.cast(column, pa.string())
            column = pc.if_else(pc.equal(column, ""), pa.scalar(None, pa.string()), column)
        elif name == columns.target:
            column = pc.cast(column, pa.type_for_alias(columns.target_type))
        arrays.append(column)
        names.append(name)
    return pa.table(arrays, names=names)


def _stats_of_block(table, kind: str, columns: _Columns, seed: int, fraction: float) -> dict:
    """One block's statistics, as one row of JSON."""
    table = _typed(table, kind, columns)
    stats = block_stats(table, columns.numeric, columns.categorical, columns.target, seed, fraction, columns.text)
    return {"stats": np.array([stats.to_json()], dtype=object)}


def _write_block(table, kind: str, columns: _Columns, plan_json: str, staging: str, fraction: float) -> dict:
    """Apply the plan to one block and write its training and validation rows (files named at
    random under `staging`, none for a split without rows; `_publish` numbers them in block order).

    Raises:
        UserError: a blank where a column's policy is error, or a value that is not a number
            (naming the file).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    plan = PreparePlan.from_json(plan_json)
    where = table.column("path")[0].as_py() if table.num_rows and "path" in table.column_names else "input"
    table = _typed(table, kind, columns)
    labelled = table.filter(table.column(columns.target).is_valid())
    validation = validation_rows(labelled, columns.hashed, plan.seed, fraction)
    name = f"{uuid.uuid4().hex}.parquet"
    counts = {}
    for split, mask in (("train", ~validation), ("validation", validation)):
        part = labelled.filter(mask)
        counts[split] = part.num_rows
        if not part.num_rows:
            continue
        try:
            features = plan.features(part, order="F")
        except ValueError as exc:
            raise UserError(f"{exc} (in a block of this file)", where=where,
                            fix="fill the blanks, or set the column's data.columns.NAME.missing") from None
        shard = pa.Table.from_arrays([*(pa.array(features[:, j]) for j in range(features.shape[1])),
                                      part.column(columns.target)],
                                     names=[*(feature_column(j) for j in range(features.shape[1])), LABEL])
        folder = Path(staging) / split
        folder.mkdir(parents=True, exist_ok=True)
        # Dictionary pages cost 3/4 of the write and save nothing here; LZ4 reads back fastest (measured).
        # Row groups are the pieces a streamed job reads: 2**17 rows bound its memory.
        pq.write_table(shard, folder / name, use_dictionary=False, compression="lz4", row_group_size=1 << 17)
    return {"file": np.array([name]), "train_rows": np.array([counts["train"]]),
            "validation_rows": np.array([counts["validation"]]),
            "dropped": np.array([table.num_rows - labelled.num_rows])}


def _publish(out: Path, staging: Path, written: list[dict], manifest: PreparedManifest) -> PreparedManifest:
    """Number the staged shards in block order under `out`/train and `out`/validation (replacing
    what an earlier run wrote there), and fill the manifest's shard lists."""
    import shutil

    lists: dict[str, tuple[list[str], list[int]]] = {"train": ([], []), "validation": ([], [])}
    for split, (names, rows) in lists.items():
        target = out / split
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for entry in written:
            if not int(entry[f"{split}_rows"]):
                continue
            relative = f"{split}/part-{len(names):05d}.parquet"
            (staging / split / str(entry["file"])).rename(out / relative)
            names.append(relative)
            rows.append(int(entry[f"{split}_rows"]))
    shutil.rmtree(staging, ignore_errors=True)
    return replace(manifest, train=lists["train"][0], train_rows=lists["train"][1],
                               validation=lists["validation"][0], validation_rows=lists["validation"][1])


def _check_blanks(spec: JobSpec, stats: BlockStats, columns: _Columns, kind: str, files: list[str]) -> None:
    """Raise for the first blank of a column whose policy is `error`, naming its file and row.

    Raises:
        UserError: such a blank (exit 2).
    """
    for name in (*columns.numeric, *columns.categorical):
        kind_ = "numeric" if name in columns.numeric else "categorical"
        if missing_policy(spec.data.columns.get(name), kind_, name) == "error" and stats.all_blanks.get(name):
            where, row = _first_blank(kind, files, columns, name)
            raise UserError(f"column '{name}' is blank at {row} ({stats.all_blanks[name]:,} blank in all)",
                            where=where, fix=f"fill the blanks, or set data.columns.{name}.missing "
                                             f"({'mean' if kind_ == 'numeric' else 'most_frequent or level'})")


def _first_blank(kind: str, files: list[str], columns: _Columns, name: str) -> tuple[str, str]:
    """Where the first blank of column `name` lies: the file, and its line (CSV, counting the
    header as line 1) or row (from 0)."""
    import fsspec
    import pyarrow.csv as pcsv
    import pyarrow.json as pjson
    import pyarrow.parquet as pq

    for path in files:
        with fsspec.open(path, "rb", compression="infer") as handle:
            if kind == "csv":
                table = pcsv.read_csv(handle, convert_options=pcsv.ConvertOptions(
                    include_columns=[name], strings_can_be_null=True))
            elif kind == "parquet":
                table = pq.read_table(handle, columns=[name])
            else:
                table = pjson.read_json(handle).select([name])
        table = _typed_column(table, name, columns)
        blank = table.column(name).is_null().to_numpy(zero_copy_only=False)
        if blank.any():
            row = int(np.argmax(blank))
            return path, f"line {row + 2}" if kind == "csv" else f"row {row}"
    return files[0], "?"


def _typed_column(table, name: str, columns: _Columns):
    """A one-column table with blank strings as nulls (as the pass reads categorical columns)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = table.column(name)
    if name in columns.categorical and not pa.types.is_null(column.type):
        column = pc.cast(column, pa.string())
        column = pc.if_else(pc.equal(column, ""), pa.scalar(None, pa.string()), column)
    return pa.table([column], names=[name])


def _sizes(files: list[str]) -> list[int]:
    """Each input's size in bytes."""
    import fsspec

    sizes = []
    for path in files:
        fs, inner = fsspec.core.url_to_fs(path)
        sizes.append(int(fs.size(inner)))
    return sizes


def _fingerprint(files: list[str]) -> str:
    """sha256 over each input's name and size."""
    digest = hashlib.sha256()
    for path, size in zip(files, _sizes(files), strict=True):
        digest.update(f"{path}\0{size}\n".encode())
    return digest.hexdigest()
