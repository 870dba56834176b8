"""Chinese text (issue 30): elastrain's text models on COLD (`datasets/cold-zh/`, the Chinese
Offensive Language Detection set) against TF-IDF over jieba's words + logistic regression.

As the data set's authors split it: `elastrain prepare` on train.csv with dev.csv as its
validation table (jieba word segmentation, a BPE tokenizer trained on train.csv), the bag of embeddings
and the transformer encoder trained on 2 elastic workers, each scored on test.csv's raw texts
through the saved model (the plan applied to raw text). The baseline: `TfidfVectorizer` over
jieba's words (unigrams and bigrams, sublinear tf) + `LogisticRegression` with `C` chosen on
dev.csv from {0.1, 1, 10, 100}, scored on test.csv. Texts are never printed (a moderation set).

    python -m bench.cold_zh [--epochs 5] [--save]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench import common

DATA = Path(__file__).resolve().parents[1] / "datasets" / "cold-zh" / "COLDataset"
TEXT = {"type": "text", "text": {"tokenizer": "bpe", "vocab_size": 20000, "max_length": 64,
                                 "segment": "jieba"}}
ENCODERS = {"bag": {"embedding_dim": 64}, "transformer": {"embedding_dim": 64, "layers": 2, "heads": 4}}


def _read(name: str) -> tuple[list[str], np.ndarray]:
    import pandas as pd

    frame = pd.read_csv(DATA / name, encoding="utf-8-sig")
    return frame["TEXT"].astype(str).tolist(), frame["label"].to_numpy()


def baseline() -> dict:
    """TF-IDF over jieba's words + logistic regression, C chosen on dev.csv: test accuracy and macro F1."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    from elastrain.data.text import segment

    (train, train_y), (dev, dev_y), (test, test_y) = (_read(name) for name in ("train.csv", "dev.csv", "test.csv"))
    vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), token_pattern=r"(?u)\S+")
    x_train = vectorizer.fit_transform(segment(train, "jieba"))
    x_dev, x_test = vectorizer.transform(segment(dev, "jieba")), vectorizer.transform(segment(test, "jieba"))
    fitted = {c: LogisticRegression(C=c, max_iter=3000).fit(x_train, train_y) for c in (0.1, 1, 10, 100)}
    best = max(fitted, key=lambda c: f1_score(dev_y, fitted[c].predict(x_dev), average="macro"))
    predicted = fitted[best].predict(x_test)
    return {"accuracy": float(accuracy_score(test_y, predicted)),
            "macro_f1": float(f1_score(test_y, predicted, average="macro")), "C": best}


def measure(folder: Path, epochs: int) -> dict:
    """The figures of the module's docstring (an embedded Ray must be up)."""
    import yaml
    from sklearn.metrics import accuracy_score, f1_score

    from elastrain import load_model
    from elastrain.elastic import RunOptions, run_here
    from elastrain.prep.run import prepare
    from elastrain.spec import validate_spec

    spec = {"name": "cold", "data": {"source": f"csv:{DATA / 'train.csv'}", "target": "label",
                                     "validation_source": f"csv:{DATA / 'dev.csv'}",
                                     "columns": {"": {"type": "skip"}, "split": {"type": "skip"},
                                                 "topic": {"type": "skip"}, "TEXT": TEXT}}}
    (folder / "prepare.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True))
    manifest, _ = prepare(validate_spec(spec, "bench"), folder / "prepared", None)
    print(f"prepared: {sum(manifest.train_rows):,} training rows, {sum(manifest.validation_rows):,} validation rows "
          f"in {manifest.fit_s + manifest.write_s:.1f} s", file=sys.stderr)
    test, test_y = _read("test.csv")
    figures = {}
    for encoder, options in ENCODERS.items():
        job = validate_spec({"name": f"cold-{encoder}", "data": {"source": f"prepared:{folder / 'prepared'}"},
                             "model": {"kind": "text", "encoder": encoder, **options},
                             "train": {"epochs": epochs, "batch_size": 128, "lr": 0.002, "seed": 0,
                                       "keep_best": "val_f1_macro"},
                             "resources": {"workers": {"min": 2, "max": 2}, "cpus_per_worker": 0.5}}, "bench")
        with tempfile.TemporaryDirectory() as home:
            result = run_here(job, Path(home), None, RunOptions())
            predicted = load_model(result.model_path).predict([{"TEXT": text} for text in test])
        figures[encoder] = {"accuracy": float(accuracy_score(test_y, predicted)),
                            "macro_f1": float(f1_score(test_y, predicted, average="macro")),
                            "dev_macro_f1": result.metrics.get("val_f1_macro")}
        print(f"{encoder}: test accuracy {figures[encoder]['accuracy']:.4f}, macro F1 "
              f"{figures[encoder]['macro_f1']:.4f}", file=sys.stderr)
    reference = baseline()
    print(f"tf-idf over jieba + logistic regression (C={reference['C']}): test accuracy {reference['accuracy']:.4f}, "
          f"macro F1 {reference['macro_f1']:.4f}", file=sys.stderr)
    return {"cold_test_accuracy": round(figures["bag"]["accuracy"], 4),
            "cold_test_macro_f1": round(figures["bag"]["macro_f1"], 4),
            "cold_transformer_test_accuracy": round(figures["transformer"]["accuracy"], 4),
            "cold_transformer_test_macro_f1": round(figures["transformer"]["macro_f1"], 4),
            "cold_baseline_accuracy": round(reference["accuracy"], 4),
            "cold_baseline_macro_f1": round(reference["macro_f1"], 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--save", action="store_true", help="also write the report to bench/results/")
    args = parser.parse_args()
    common.start_ray()
    with tempfile.TemporaryDirectory() as folder:
        figures = measure(Path(folder), args.epochs)
    common.report("cold_zh", {**figures, "epochs": args.epochs}, args.save)


if __name__ == "__main__":
    main()
