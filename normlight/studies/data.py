"""The data the studies train on, chosen when a study builds its sweeps (nothing is downloaded).

- vision: Fashion-MNIST from Debian's ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``) at the
  ``cpu`` and ``gpu`` scales when its four IDX files are there; otherwise, and always at ``smoke`` scale (seconds,
  identical on every machine), scikit-learn's bundled 8x8 digits upscaled to the same size;
- language: the WordNet lemmas and glosses timm ships (``WordNetGlossesDataModule``, 2.1 MB of English, 4.5x the
  pydoc text), at every scale.

The choice is written into each run's ``data`` override, so :func:`describe` reads it back from the runs and a
report always says what its numbers were measured on.
"""

from __future__ import annotations

from pathlib import Path

from normlight.data.vision import FashionMNISTDataModule

FASHION_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def fashion_mnist_root() -> Path | None:
    """The Fashion-MNIST directory if all four IDX files (plain or .gz) are there, else None."""
    root = Path(FashionMNISTDataModule.default_root)
    ok = all(any((root / (f + ext)).is_file() for ext in ("", ".gz")) for f in FASHION_FILES)
    return root if ok else None


def vision(scale: str, img_size: int, batch_size: int, eval_batch_size: int | None = None) -> dict:
    """The ``data`` override of a vision run: Fashion-MNIST when present (not at smoke scale), else digits.
    ``eval_batch_size`` keeps the validation set the same size when the training batch varies (validation reads
    ``limit_val_batches`` batches)."""
    args = {"img_size": img_size, "in_chans": 1, "batch_size": batch_size}
    if eval_batch_size is not None:
        args["eval_batch_size"] = eval_batch_size
    if scale != "smoke" and fashion_mnist_root() is not None:
        return {"class_path": "FashionMNISTDataModule", "init_args": args}
    return {"class_path": "DigitsDataModule", "init_args": args}


def text(block_size: int, batch_size: int) -> dict:
    """The ``data`` override of a language run: the WordNet glosses, byte-level."""
    return {"class_path": "WordNetGlossesDataModule", "init_args": {"block_size": block_size, "batch_size": batch_size}}


DESCRIPTIONS = {
    "FashionMNISTDataModule": "Fashion-MNIST (60k train / 10k test 28 px images, Debian's dataset-fashion-mnist)",
    "DigitsDataModule": "scikit-learn's bundled 8x8 digits (1,797 images, upscaled)",
    "WordNetGlossesDataModule": "the WordNet lemmas and glosses shipped by timm (2.1 MB of English, byte-level)",
}


def describe(runs, scale: str) -> list[str]:
    """Report notes naming the datasets the runs used, and saying when Fashion-MNIST was absent."""
    used = sorted({str((r.overrides.get("data") or {}).get("class_path", "")) for r in runs} - {""})
    notes = [f"Data: {DESCRIPTIONS.get(c, c)}." for c in used]
    if "DigitsDataModule" in used and scale != "smoke":
        notes.append(
            "Fashion-MNIST was absent (/usr/share/datasets/fashion-mnist; `apt-get install dataset-fashion-mnist`): "
            "the vision runs used the much smaller digits set, so their accuracies are not comparable with a "
            "Fashion-MNIST run."
        )
    return notes
