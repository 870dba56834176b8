"""A seeded mixed table for `elastrain prepare`'s benchmark and tests: numeric columns (one with
blanks), categorical columns (with blanks and a rare level), optionally a text column (2-8 words
of a 400-word vocabulary, some blank), a binary target; written as CSV parts; and the references
a user trusts on data that fits, to compare with: scikit-learn's preprocessing, and a BPE
tokenizer trained in one process with HuggingFace `tokenizers`.

    python -m bench.mixed_table OUT_FOLDER --megabytes 200 [--parts 4] [--seed 0] [--no-text]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

NUMERIC = [f"x{j}" for j in range(8)]
CATEGORICAL = {"color": ["red", "green", "blue", "violet"], "size": ["S", "M", "L", "XL"],
               "city": [f"city{k:02d}" for k in range(40)]}
LEVEL_WEIGHTS = {"color": [0.5, 0.3, 0.19, 0.01]}
BLANK_NUMERIC = "x0"       # 5 % blank: its policy must be `mean`
TEXT = "note"
# The text column's declaration when it is prepared (a BPE tokenizer; a note has at most 8 words).
TEXT_SPEC = {"type": "text", "text": {"tokenizer": "bpe", "vocab_size": 1000, "max_length": 12}}
_SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "qu"]
WORDS = [a + b + c for a in _SYLLABLES for b in _SYLLABLES for c in _SYLLABLES[:4]]   # 400 words
BYTES_PER_ROW = {False: 95, True: 131}   # about, as CSV, without and with the text column (measured)


def table(rows: int, seed: int, text: bool = False):
    """`rows` rows as an Arrow table (blanks are nulls); the label depends on x1, x2 and color.
    With `text`, a column `note` too (2 % blank)."""
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    columns = {}
    for j, name in enumerate(NUMERIC):
        values = rng.normal(j, 1 + j, rows).round(6)
        if name == BLANK_NUMERIC:
            values[rng.random(rows) < 0.05] = np.nan
        columns[name] = pa.array(values, from_pandas=True)
    for name, levels in CATEGORICAL.items():
        values = rng.choice(levels, rows, p=LEVEL_WEIGHTS.get(name)).astype(object)
        values[rng.random(rows) < 0.05] = None
        columns[name] = pa.array(values, pa.string())
    signal = columns["x1"].to_numpy() - 1 + 0.5 * columns["x2"].to_numpy() / 3
    signal += np.where(columns["color"].to_numpy(zero_copy_only=False) == "red", 1.0, 0.0)
    columns["label"] = ((signal + rng.normal(0, 1, rows)) > 0.5).astype(np.int64)
    if text:
        columns[TEXT] = pa.array(_notes(rng, rows), pa.string())
    return pa.table(columns)


def _notes(rng: np.random.Generator, rows: int) -> list[str | None]:
    """`rows` texts of 2-8 words (Zipf-like word frequencies), 2 % of them blank."""
    weights = 1 / np.arange(1, len(WORDS) + 1)
    picks = rng.choice(len(WORDS), (rows, 8), p=weights / weights.sum())
    lengths = rng.integers(2, 9, rows)
    blank = rng.random(rows) < 0.02
    words = np.asarray(WORDS, dtype=object)[picks]
    return [None if blank[i] else " ".join(words[i, :lengths[i]]) for i in range(rows)]


def write_csv(folder: Path, megabytes: float, parts: int = 4, seed: int = 0, text: bool = True) -> list[Path]:
    """About `megabytes` of rows as `parts` CSV files, part-0.csv ... (written once, then reused),
    each written a slice at a time (memory stays bounded whatever the size)."""
    import pyarrow.csv as pcsv

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"part-{index}.csv" for index in range(parts)]
    done = folder / "DONE"
    if not done.exists():
        rows = int(megabytes * 1e6 / BYTES_PER_ROW[text]) // parts
        slice_rows = 500_000
        for index, path in enumerate(paths):
            first = table(min(rows, slice_rows), seed * 1000 + index, text)
            with pcsv.CSVWriter(path, first.schema) as writer:
                writer.write_table(first)
                for start in range(slice_rows, rows, slice_rows):
                    writer.write_table(table(min(slice_rows, rows - start), (seed * 1000 + index) * 10_000 + start,
                                             text))
        done.write_text(str(rows * parts))
    return paths


def spec(source: str, text: str | None = None) -> dict:
    """The job whose preprocessing the benchmark prepares: x0's blanks take the mean, the
    categorical columns' blanks are a level of their own; the text column, where the table has
    one, `text` (as TEXT_SPEC) or `skip`."""
    columns: dict = {BLANK_NUMERIC: {"missing": "mean"}}
    if text:
        columns[TEXT] = TEXT_SPEC if text == "text" else {"type": text}
    return {"name": "bench-prepare", "data": {"source": source, "target": "label", "columns": columns},
            "model": {"kind": "mlp", "hidden": [32]}}


def sklearn_reference():
    """scikit-learn's preprocessing of the same table: the numeric columns imputed with their mean
    and standardized, the categorical ones one-hot (a blank its own category, last; an unseen
    level all zeros), in that order."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numbers = make_pipeline(SimpleImputer(strategy="mean"), StandardScaler())
    return ColumnTransformer([("num", numbers, NUMERIC),
                              ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), list(CATEGORICAL))])


def tokenizer_reference(train: list[str | None], *others: list[str | None]) -> list[np.ndarray]:
    """TEXT_SPEC's token ids (n, max_length) of `train` and of each of `others`, from a BPE
    tokenizer trained on `train` in one process with HuggingFace `tokenizers` as its documentation
    builds one (NFKC + lower case, split on whitespace and punctuation, [PAD] = 0, [UNK] = 1;
    padded and truncated to max_length); a blank is all padding."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    options = TEXT_SPEC["text"]
    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    cleaned = [["" if text is None else text for text in texts] for texts in (train, *others)]
    tokenizer.train_from_iterator([cleaned[0]], trainers.BpeTrainer(
        vocab_size=options["vocab_size"], special_tokens=["[PAD]", "[UNK]"], show_progress=False))
    tokenizer.enable_truncation(options["max_length"])
    tokenizer.enable_padding(length=options["max_length"], pad_id=0, pad_token="[PAD]")
    return [np.asarray([item.ids for item in tokenizer.encode_batch(texts)], np.int64).reshape(len(texts), -1)
            for texts in cleaned]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--megabytes", type=float, default=200.0)
    parser.add_argument("--parts", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-text", action="store_true", help="leave out the text column")
    args = parser.parse_args()
    for path in write_csv(args.out, args.megabytes, args.parts, args.seed, not args.no_text):
        print(path)


if __name__ == "__main__":
    main()
