"""Sharded data on local disk or any fsspec URL: listing the shards, their pieces, and reading one piece.

A sharded source is `parquet:GLOB`, `csv:GLOB`, `jsonl:GLOB` or `npy:GLOB` where GLOB has a
wildcard or a URL scheme (`parquet:s3://bucket/higgs/part-*.parquet`, `csv:/data/part-*.csv.gz`,
`npy:/data/part-*.x.npy`). Its pieces are what one worker reads at once: a Parquet file's row
groups, runs of `NPY_PIECE_ROWS` rows of a `.npy` pair (`NAME.x.npy` holds the features (N, F),
`NAME.y.npy` the targets (N,)), or a whole CSV or JSON Lines file (text has no index to seek a row
by; gzip and the other codecs fsspec knows are recognised by the file's suffix). Listing reads only
metadata for Parquet (footers) and `.npy` (headers); a text shard is read once to count its rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import fsspec
import numpy as np

from elastrain.errors import UserError
from elastrain.spec.models import GLOB_WILDCARDS, npy_targets

NPY_PIECE_ROWS = 65_536
TEXT_FORMATS = ("csv", "jsonl")


@dataclass(frozen=True)
class ShardInfo:
    """One shard as listed: where it is, its rows per piece, and its columns.

    Attributes:
        url: the shard's path or URL (of the features file for `.npy` pairs).
        pieces: rows per piece, in file order.
        columns: (name, type) per column: Parquet's names and Arrow types; for `.npy`,
            ("x", dtype and width) and ("y", dtype).
        piece_bytes: bytes read from storage per piece (compressed, for Parquet).
        width: features per row (Parquet: the columns, the target among them).
    """

    url: str
    pieces: tuple[int, ...]
    columns: tuple[tuple[str, str], ...]
    piece_bytes: tuple[int, ...] = ()
    width: int = 0

    @property
    def rows(self) -> int:
        """Rows in the shard."""
        return sum(self.pieces)


def list_shards(kind: str, pattern: str) -> list[str]:
    """The shards `pattern` matches, sorted (the order row ids count in).

    Raises:
        UserError: nothing matches, or the storage cannot be listed.
    """
    try:
        fs, path = fsspec.core.url_to_fs(pattern)
        found = sorted(fs.glob(path)) if any(c in path for c in GLOB_WILDCARDS) else ([path] if fs.isfile(path) else [])
    except Exception as exc:   # whatever the filesystem raised (no such bucket, no credentials)
        raise UserError(f"cannot list the shards: {type(exc).__name__}: {exc}", where=pattern,
                        fix="check the URL and the credentials for its storage") from None
    if kind == "npy":
        found = [p for p in found if p.endswith(".x.npy")]
    if not found:
        wanted = "files NAME.x.npy with NAME.y.npy beside them" if kind == "npy" else kind
        raise UserError(f"no shards match ({wanted})",
                        where=pattern, fix="check data.source's glob; relative paths are resolved against the "
                                           "spec file's folder")
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return [p if protocol in ("file", "local") else f"{protocol}://{p}" for p in found]


def shard_info(kind: str, url: str, sep: str = ",") -> ShardInfo:
    """List one shard's pieces and columns (from its metadata alone, but for text shards: see the
    module's docstring). `sep` is a CSV shard's separator.

    Raises:
        UserError: the shard cannot be opened or is not a file of its format (naming it).
    """
    try:
        if kind in TEXT_FORMATS:
            table = _read_text(kind, url, sep, None)
            fs, path = fsspec.core.url_to_fs(url)
            stored = fs.size(path)   # bytes read from storage: the file as stored
            # Text has no types: a column is a number in every shard or not, whatever its digits.
            columns = tuple((f.name, "double" if _numeric_type(f.type) else str(f.type)) for f in table.schema)
            return ShardInfo(url, (table.num_rows,), columns, (int(stored),), len(columns))
        if kind == "parquet":
            import pyarrow.parquet as pq

            with fsspec.open(url, "rb") as handle:
                meta = pq.ParquetFile(handle).metadata
                schema = meta.schema.to_arrow_schema()
                groups = [meta.row_group(i) for i in range(meta.num_row_groups)]
            sizes = tuple(sum(g.column(j).total_compressed_size for j in range(g.num_columns)) for g in groups)
            return ShardInfo(url, tuple(g.num_rows for g in groups), tuple((f.name, str(f.type)) for f in schema),
                             sizes, len(schema))
        x_shape, x_type = _npy_header(url)
        y_shape, y_type = _npy_header(npy_targets(url))
        if len(x_shape) != 2 or len(y_shape) != 1 or x_shape[0] != y_shape[0]:
            raise UserError(f"the pair's shapes {x_shape} and {y_shape} are not (N, F) and (N,)", where=url,
                            fix="write features as a 2-D array and targets as a 1-D array of the same length")
        rows = x_shape[0]
        pieces = tuple(min(NPY_PIECE_ROWS, rows - start) for start in range(0, rows, NPY_PIECE_ROWS))
        row_bytes = x_shape[1] * np.dtype(x_type).itemsize + np.dtype(y_type).itemsize
        return ShardInfo(url, pieces, (("x", f"{x_type}[{x_shape[1]}]"), ("y", y_type)),
                         tuple(rows * row_bytes for rows in pieces), x_shape[1])
    except UserError:
        raise
    except Exception as exc:   # a missing, truncated or foreign file: one line naming the shard
        raise UserError(f"cannot read the shard's metadata: {type(exc).__name__}: {exc}", where=url,
                        fix=f"check that it is a whole {kind} file") from None


def _npy_header(url: str) -> tuple[tuple[int, ...], str]:
    with fsspec.open(url, "rb") as handle:
        shape, fortran, dtype = _read_header(handle)
    if fortran:
        raise UserError("the array is in Fortran order", where=url, fix="save it with numpy.save of a C-ordered array")
    return tuple(shape), str(dtype)


def read_piece(kind: str, shard: ShardInfo, piece: int, features: list[str], target: str, sep: str = ","
               ) -> tuple[np.ndarray, np.ndarray]:
    """The rows of piece `piece` of `shard`: features float32 (n, F) in the order of `features`
    (ignored for `.npy`) and the raw targets (n,). `sep` is a CSV shard's separator.

    Raises:
        UserError: the shard vanished, is truncated or corrupt (naming it).
    """
    try:
        if kind in TEXT_FORMATS:
            table = _read_text(kind, shard.url, sep, [*features, target])
            if table.num_rows != shard.pieces[piece]:
                raise ValueError(f"it holds {table.num_rows} rows, not the {shard.pieces[piece]} listed")
            return _table_rows(table, features, target)
        if kind == "parquet":
            import pyarrow.parquet as pq

            with fsspec.open(shard.url, "rb") as handle:
                table = pq.ParquetFile(handle).read_row_group(piece, columns=[*features, target])
            return _table_rows(table, features, target)
        start = piece * NPY_PIECE_ROWS
        rows = shard.pieces[piece]
        return _npy_rows(shard.url, start, rows).astype(np.float32, copy=False), _npy_rows(
            npy_targets(shard.url), start, rows)
    except Exception as exc:   # whatever the storage or the decoder raised
        raise UserError(f"cannot read piece {piece} of the shard: {type(exc).__name__}: {exc}", where=shard.url,
                        fix="the shard changed or broke after the job listed its shards: restore it and run the "
                                    "job again") from None


def _table_rows(table, features: list[str], target: str) -> tuple[np.ndarray, np.ndarray]:
    """An Arrow table's `features` as float32 rows (n, F) and its raw `target` (n,)."""
    x = np.empty((table.num_rows, len(features)), np.float32)
    for j, name in enumerate(features):
        x[:, j] = table.column(name).to_numpy()
    return x, table.column(target).to_numpy()


def _read_text(kind: str, url: str, sep: str, columns: list[str] | None):
    """A CSV (with a header row) or JSON Lines shard as an Arrow table, decompressed by its
    suffix; only `columns` (all if None)."""
    import pyarrow.csv as pcsv
    import pyarrow.json as pjson

    with fsspec.open(url, "rb", compression="infer") as handle:
        if kind == "csv":
            return pcsv.read_csv(handle, parse_options=pcsv.ParseOptions(delimiter=sep),
                                 convert_options=pcsv.ConvertOptions(include_columns=columns))
        table = pjson.read_json(handle)
    return table if columns is None else table.select(columns)


def _numeric_type(arrow_type) -> bool:
    import pyarrow.types as pat

    return pat.is_integer(arrow_type) or pat.is_floating(arrow_type) or pat.is_boolean(arrow_type)


def _read_header(handle) -> tuple[tuple[int, ...], bool, np.dtype]:
    """The shape, Fortran order and dtype of the `.npy` file open at `handle` (left after the header)."""
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(handle)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(handle)
    raise ValueError(f".npy format version {version[0]}.{version[1]} (1.0 and 2.0 are read)")


def _npy_rows(url: str, start: int, rows: int) -> np.ndarray:
    """Rows [start, start + rows) of a C-ordered `.npy` file, read with one ranged read."""
    with fsspec.open(url, "rb") as handle:
        shape, _, dtype = _read_header(handle)
        row_bytes = dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))
        handle.seek(handle.tell() + start * row_bytes)
        data = handle.read(rows * row_bytes)
    if len(data) != rows * row_bytes:
        raise ValueError(f"the file ends early: {len(data)} of {rows * row_bytes} bytes")
    return np.frombuffer(data, dtype=dtype).reshape((rows, *shape[1:]))

