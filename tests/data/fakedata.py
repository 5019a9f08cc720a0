"""Tiny datasets written in the REAL on-disk formats (IDX, CIFAR-10 python pickles, text files) for tests."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    """An unsigned-byte IDX file: 0x00 0x00 0x08 <ndim>, big-endian uint32 sizes, raw bytes."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path = path.with_name(path.name + ".gz") if compress else path
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def write_idx_dir(root: Path, n_train: int = 96, n_test: int = 32, size: int = 28) -> Path:
    """MNIST-layout directory with the four IDX files; label k images are brighter for larger k."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n)
        images = (rng.random((n, size, size)) * 100 + labels[:, None, None] * 15).astype(np.uint8)
        write_idx(root / f"{split}-images-idx3-ubyte", images)
        write_idx(root / f"{split}-labels-idx1-ubyte", labels)
    return root


def write_cifar_dir(root: Path, per_batch: int = 20) -> Path:
    """``cifar-10-batches-py`` with 5 training batches and a test batch in CIFAR's pickle format."""
    rng = np.random.default_rng(0)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = rng.integers(0, 10, per_batch).tolist()
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        with open(d / name, "wb") as f:
            pickle.dump(
                {b"batch_label": name.encode(), b"labels": labels, b"data": data, b"filenames": [b"x.png"] * per_batch},
                f,
            )
    return d


def write_text_dir(root: Path, n_files: int = 3, chars: int = 4000) -> Path:
    """A directory of small English-ish text files."""
    root.mkdir(parents=True, exist_ok=True)
    words = "the norm of a layer keeps the residual stream stable while training deep networks".split()
    rng = np.random.default_rng(0)
    for i in range(n_files):
        text = " ".join(words[j] for j in rng.integers(0, len(words), chars // 5))
        (root / f"part{i}.txt").write_text(text)
    return root
