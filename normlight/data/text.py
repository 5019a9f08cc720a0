"""Language-modeling DataModules with byte-level tokens (vocabulary 256: no tokenizer files, works offline).

Each yields ``(inputs[B, T] int64, targets[B, T] int64)`` with targets = inputs shifted by one token, and
exposes ``vocab_size`` and ``block_size`` (= T) so the task can check the model agrees before training.
The validation split is the last ``val_fraction`` of the token stream: deterministic and never seen in training.
"""

from __future__ import annotations

import glob
import random
from pathlib import Path

import torch
from torch.utils.data import Dataset

from normlight.data.common import BaseDataModule, DataError


def encode(text: str) -> torch.Tensor:
    """Byte-level tokens of ``text`` (UTF-8), as int64."""
    return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).long()


def decode(tokens) -> str:
    """Text of byte-level tokens; bytes that do not form valid UTF-8 become U+FFFD."""
    return bytes(int(t) for t in tokens).decode("utf-8", errors="replace")


class TokenBlocks(Dataset):
    """Non-overlapping windows of ``block_size + 1`` tokens -> (x, y) shifted pairs."""

    def __init__(self, tokens: torch.Tensor, block_size: int):
        self.tokens, self.block_size = tokens, block_size

    def __len__(self) -> int:
        return max(0, (len(self.tokens) - 1) // self.block_size)

    def __getitem__(self, i: int):
        chunk = self.tokens[i * self.block_size : (i + 1) * self.block_size + 1]
        return chunk[:-1], chunk[1:]


class _ByteText(BaseDataModule):
    vocab_size = 256
    empty_hint = "give the data module some text"

    def __init__(
        self, block_size: int, batch_size: int, val_fraction: float, num_workers: int, eval_batch_size: int | None
    ):
        super().__init__(batch_size, num_workers, eval_batch_size)
        if block_size < 2:
            raise DataError(f"block_size must be >= 2, got {block_size}")
        if not 0.0 < val_fraction < 1.0:
            raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")
        self.block_size, self.val_fraction = block_size, val_fraction

    def text(self) -> str:
        """The whole corpus as one string."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        """Tokenize once; the tail of the stream is validation (and test)."""
        if self.train_set is not None:
            return
        self.check()
        text = self.text()
        name = type(self).__name__
        if not text.strip():
            raise DataError(f"{name}: the corpus is empty; {self.empty_hint}")
        tokens = encode(text)
        n_val = int(len(tokens) * self.val_fraction)
        if n_val < self.block_size + 1 or len(tokens) - n_val < self.block_size + 1:
            fits = min(n_val, len(tokens) - n_val) - 1
            fix = f"set --data.block_size {fits} or less" if fits >= 2 else "give it more text"
            raise DataError(
                f"{name}: the corpus has {len(tokens)} bytes, too few for a validation split of {self.val_fraction} "
                f"with block_size={self.block_size} (each split needs block_size + 1 bytes); {fix}"
            )
        self.train_set = TokenBlocks(tokens[:-n_val], self.block_size)
        self.val_set = TokenBlocks(tokens[-n_val:], self.block_size)
        self.test_set = self.val_set


class PydocTextDataModule(_ByteText):
    """CPython's bundled documentation text (``pydoc_data.topics``, ~465k characters of real English)."""

    def __init__(
        self,
        block_size: int = 128,
        batch_size: int = 16,
        val_fraction: float = 0.1,
        num_workers: int = 0,
        eval_batch_size: int | None = None,
    ):
        super().__init__(block_size, batch_size, val_fraction, num_workers, eval_batch_size)

    def text(self) -> str:
        """All pydoc topics, in sorted key order so the corpus is identical on every machine with this Python."""
        from pydoc_data.topics import topics

        return "\n\n".join(topics[k] for k in sorted(topics))


class WordNetGlossesDataModule(_ByteText):
    """English dictionary entries: the WordNet lemmas and glosses of the 21,843 ImageNet-21k synsets that timm
    (a normlight dependency) ships as ``timm/data/_info/imagenet_synset_to_{lemma,definition}.txt``.

    One line per synset, ``"lemma, lemma: gloss"`` (about 2.1 MB of real English, 4.5x the pydoc text). The
    files list synsets in WordNet offset order, which groups them by topic (animals, then artifacts, foods, ...),
    so the lines are shuffled with a fixed seed (``shuffle_seed``) before the tail is cut off for validation:
    both splits then cover every topic, and the corpus is identical on every machine with the same files.
    """

    files = ("imagenet_synset_to_lemma.txt", "imagenet_synset_to_definition.txt")

    def __init__(
        self,
        block_size: int = 128,
        batch_size: int = 16,
        val_fraction: float = 0.1,
        num_workers: int = 0,
        eval_batch_size: int | None = None,
        shuffle_seed: int = 0,
    ):
        super().__init__(block_size, batch_size, val_fraction, num_workers, eval_batch_size)
        self.shuffle_seed = shuffle_seed

    @staticmethod
    def directory() -> Path:
        """Where the installed timm keeps the synset files."""
        import timm.data

        return Path(timm.data.__file__).parent / "_info"

    def check(self) -> None:
        """Both synset files must exist in the installed timm."""
        missing = [f for f in self.files if not (self.directory() / f).is_file()]
        if missing:
            raise DataError(
                f"WordNetGlossesDataModule: the installed timm lacks {', '.join(missing)} under {self.directory()}; "
                "install timm>=1.0 (a normlight dependency) or use PydocTextDataModule"
            )

    def text(self) -> str:
        """``"lemmas: gloss"`` lines, shuffled with ``shuffle_seed``."""
        lemmas, glosses = (self._table(self.directory() / f) for f in self.files)
        lines = [f"{lemmas.get(k, '')}: {g}" for k, g in sorted(glosses.items())]
        random.Random(self.shuffle_seed).shuffle(lines)
        return "\n".join(lines) + "\n"

    @staticmethod
    def _table(path: Path) -> dict[str, str]:
        out = {}
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            key, sep, value = line.partition("\t")
            if sep and value.strip():
                out[key.strip()] = value.strip()
        return out


class TextFilesDataModule(_ByteText):
    """Any set of local text files: a directory (all files under it), a glob pattern, or a list of either.

    Files are read in sorted path order and joined with blank lines.
    """

    empty_hint = "data.paths matches only empty (or whitespace-only) files; point it at files with text"

    def __init__(
        self,
        paths: str | list[str],
        block_size: int = 128,
        batch_size: int = 16,
        val_fraction: float = 0.1,
        num_workers: int = 0,
        eval_batch_size: int | None = None,
    ):
        super().__init__(block_size, batch_size, val_fraction, num_workers, eval_batch_size)
        self.paths = [paths] if isinstance(paths, str) else list(paths)

    def files(self) -> list[Path]:
        """The resolved, sorted list of files; a path that matches nothing raises :class:`DataError`."""
        out = []
        for p in self.paths:
            path = Path(p).expanduser()
            if path.is_dir():
                found = sorted(f for f in path.rglob("*") if f.is_file())
            elif path.is_file():
                found = [path]
            else:
                found = sorted(Path(f) for f in glob.glob(str(path), recursive=True) if Path(f).is_file())
            if not found:
                raise DataError(
                    f"TextFilesDataModule: {p} matches no file; give data.paths as existing text files, "
                    "directories or glob patterns (e.g. 'corpus/**/*.txt')"
                )
            out += found
        return sorted(set(out))

    def check(self) -> None:
        """Every entry of ``paths`` must match at least one file."""
        self.files()

    def text(self) -> str:
        """The files' contents joined by blank lines (invalid UTF-8 is replaced, never fatal)."""
        parts = []
        for f in self.files():
            try:
                parts.append(f.read_text(encoding="utf-8", errors="replace"))
            except OSError as exc:
                raise DataError(f"TextFilesDataModule: cannot read {f}: {exc}") from exc
        return "\n\n".join(parts)
