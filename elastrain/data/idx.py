"""MNIST's IDX format: a big-endian header (magic number, dimension sizes) then raw bytes.

Format as published with the MNIST database (Y. LeCun, C. Cortes, C. Burges): the magic
number is 0x00000803 for an image file (3 dimensions of unsigned bytes) and 0x00000801
for a label file (1 dimension).
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from elastrain.errors import UserError

IMAGES_MAGIC = 0x0803
LABELS_MAGIC = 0x0801


def read_idx(path: Path, expected_magic: int) -> np.ndarray:
    """The array stored in one IDX file (gzipped or not), shaped by its header.

    Raises:
        UserError: the magic number is not `expected_magic`, or the file is shorter than its header says.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as exc:
        raise UserError(f"cannot read IDX file ({exc})", where=str(path),
                        fix="check that the file is a complete IDX file, gzipped or not") from None
    kind = "image" if expected_magic == IMAGES_MAGIC else "label"
    if len(raw) < 4 or struct.unpack(">I", raw[:4])[0] != expected_magic:
        found = f"0x{struct.unpack('>I', raw[:4])[0]:08x}" if len(raw) >= 4 else "nothing"
        raise UserError(f"bad magic number {found} for an IDX {kind} file (expected 0x{expected_magic:08x})",
                        where=str(path), fix="point data.source at a folder of MNIST-style IDX files")
    ndim = expected_magic & 0xFF
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    count = int(np.prod(dims))
    if len(raw) - header < count:
        raise UserError(f"IDX file is truncated: its header promises {count} bytes of data, "
                        f"it holds {len(raw) - header}", where=str(path), fix="download or copy the file again")
    return np.frombuffer(raw, dtype=np.uint8, count=count, offset=header).reshape(dims)


def read_idx_folder(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W) and labels (N,) from every `*images-idx3-ubyte[.gz]` file in `folder`
    and its matching `*labels-idx1-ubyte[.gz]`, concatenated in name order.

    Raises:
        UserError: the folder is missing, holds no image file, or a file is malformed or unmatched.
    """
    if not folder.is_dir():
        raise UserError("IDX data folder not found", where=str(folder),
                        fix="check data.source (relative paths are resolved against the spec file's folder)")
    image_files = sorted(p for p in folder.iterdir() if "images-idx3-ubyte" in p.name)
    if not image_files:
        raise UserError("no *images-idx3-ubyte[.gz] file in this folder", where=str(folder),
                        fix="point data.source at a folder holding MNIST-style IDX files")
    images, labels = [], []
    for image_file in image_files:
        label_file = image_file.with_name(image_file.name.replace("images-idx3", "labels-idx1"))
        if not label_file.is_file():
            raise UserError(f"no label file {label_file.name} beside {image_file.name}", where=str(folder),
                            fix="put the matching *labels-idx1-ubyte file in the same folder")
        image_array, label_array = read_idx(image_file, IMAGES_MAGIC), read_idx(label_file, LABELS_MAGIC)
        if len(image_array) != len(label_array):
            raise UserError(f"{len(image_array)} images but {len(label_array)} labels", where=str(label_file),
                            fix="use the label file that belongs to the image file")
        images.append(image_array)
        labels.append(label_array)
    return np.concatenate(images), np.concatenate(labels).astype(np.int64)
