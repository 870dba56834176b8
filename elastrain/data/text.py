"""Text into token ids: cleaning, word segmentation and a subword tokenizer trained on the data.

Cleaning is Unicode NFKC normalization (full-width forms become ASCII, compatibility characters
are unified) and, by default, lower case. Chinese has no spaces between words, so it is segmented
first: with jieba's dictionary and HMM (`jieba`), or one token per Han character (`char`); text
with spaces between words is left as it is (`none`). The tokenizer (HuggingFace `tokenizers`:
BPE, the default and the one that is deterministic, WordPiece or Unigram) is trained from the
training rows alone and saved as its own JSON, so a
model carries it without pickles. Ids: 0 pads, 1 is the unknown token.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from functools import lru_cache

import numpy as np

PAD, UNK = "[PAD]", "[UNK]"
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
# `auto` segments with jieba when at least this share of the non-space characters are Han.
HAN_SHARE = 0.3


def choose_segmentation(samples: list[str]) -> str:
    """`jieba` when the sample texts are mostly Chinese (Han characters), else `none`."""
    text = "".join(samples)
    letters = len(text) - text.count(" ")
    return "jieba" if letters and len(_HAN.findall(text)) / letters >= HAN_SHARE else "none"


def segment(texts: Iterable[str | None], mode: str) -> list[str]:
    """Each text as words separated by spaces (`mode`: jieba, char or none); a blank is ""."""
    texts = ["" if text is None else str(text) for text in texts]
    if mode == "jieba":
        import jieba

        jieba.setLogLevel(logging.WARNING)   # its dictionary's load is announced on stderr otherwise
        return [" ".join(word for word in jieba.cut(text) if not word.isspace()) for text in texts]
    if mode == "char":
        return [_HAN.sub(lambda match: f" {match.group(0)} ", text) for text in texts]
    return texts


def new_tokenizer(kind: str, lowercase: bool):
    """An untrained tokenizer of `kind` (bpe, wordpiece, unigram) with the cleaning above, and its trainer's class."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    model = {"wordpiece": lambda: models.WordPiece(unk_token=UNK), "bpe": lambda: models.BPE(unk_token=UNK),
             "unigram": models.Unigram}[kind]()
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), *([normalizers.Lowercase()] if lowercase else [])])
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = {"wordpiece": trainers.WordPieceTrainer, "bpe": trainers.BpeTrainer,
               "unigram": trainers.UnigramTrainer}[kind]
    return tokenizer, trainer


def train_tokenizer(texts: Iterator[list[str]], kind: str, vocab_size: int, lowercase: bool) -> str:
    """A `kind` tokenizer of at most `vocab_size` entries trained on `texts` (batches of segmented
    texts, in a fixed order), as its JSON.

    Only BPE is deterministic: the same texts give the same tokenizer. `tokenizers`' WordPiece and
    Unigram trainers (0.23.3) give another vocabulary on each run (measured: 3 of 3 runs on SMS
    spam differed), and so does a BPE with a continuation prefix.
    """
    tokenizer, trainer = new_tokenizer(kind, lowercase)
    options = {"vocab_size": vocab_size, "special_tokens": [PAD, UNK], "show_progress": False}
    if kind == "unigram":
        options["unk_token"] = UNK
    tokenizer.train_from_iterator(texts, trainer=trainer(**options))
    return tokenizer.to_str()


@lru_cache(maxsize=8)
def _loaded(tokenizer_json: str, max_length: int):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(tokenizer_json)
    tokenizer.enable_truncation(max_length)
    tokenizer.enable_padding(length=max_length, pad_id=0, pad_token=PAD)
    return tokenizer


def encode(tokenizer_json: str, texts: list[str], max_length: int) -> np.ndarray:
    """Token ids (n, max_length) int64 of segmented `texts`, truncated or padded with 0."""
    if not texts:
        return np.zeros((0, max_length), np.int64)
    encoded = _loaded(tokenizer_json, max_length).encode_batch(texts)
    return np.asarray([item.ids for item in encoded], np.int64)


def vocabulary_size(tokenizer_json: str) -> int:
    """Entries in the tokenizer's vocabulary (ids are below it)."""
    return _loaded(tokenizer_json, 1).get_vocab_size()
