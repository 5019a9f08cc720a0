"""Image classification DataModules. Images are kept as uint8 tensors and turned into normalized floats per item.

Every module yields ``(images[B, in_chans, img_size, img_size] float32, labels[B] int64)`` and exposes
``num_classes``, ``img_size`` and ``in_chans`` so the task can check the model agrees before training.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from normlight.data.common import BaseDataModule, DataError, split_indices


class ImageTensorDataset(Dataset):
    """uint8 images (N, C, H, W) + labels -> resized, channel-matched, normalized floats; optional crop/flip."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        img_size: int,
        in_chans: int,
        mean: float,
        std: float,
        augment: bool = False,
        max_value: float = 255.0,
    ):
        self.images, self.labels = images, labels
        self.img_size, self.in_chans, self.augment = img_size, in_chans, augment
        self.mean, self.std, self.max_value = mean, std, max_value

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = self.images[i].float() / self.max_value
        if x.shape[-1] != self.img_size or x.shape[-2] != self.img_size:
            x = F.interpolate(x[None], size=(self.img_size, self.img_size), mode="bilinear", align_corners=False)[0]
        if x.shape[0] != self.in_chans:  # grey -> RGB by repetition, RGB -> grey by averaging
            x = x.expand(self.in_chans, -1, -1).clone() if x.shape[0] == 1 else x.mean(0, keepdim=True)
        x = (x - self.mean) / self.std
        if self.augment:  # the standard CIFAR recipe: random 4-pixel-padded crop and horizontal flip
            pad = max(1, self.img_size // 8)
            x = F.pad(x, (pad, pad, pad, pad))
            dy, dx = torch.randint(0, 2 * pad + 1, (2,)).tolist()
            x = x[:, dy : dy + self.img_size, dx : dx + self.img_size]
            if torch.rand(()) < 0.5:
                x = x.flip(-1)
        return x, self.labels[i]


class _InMemoryVision(BaseDataModule):
    """Shared logic: load (train, test) uint8 arrays once, carve a seeded validation split from train."""

    num_classes = 10
    native_size = 28
    mean, std = 0.5, 0.5

    def __init__(
        self,
        img_size: int,
        in_chans: int,
        batch_size: int,
        val_fraction: float,
        split_seed: int,
        augment: bool,
        num_workers: int,
        eval_batch_size: int | None = None,
    ):
        super().__init__(batch_size, num_workers, eval_batch_size)
        if img_size < 4 or in_chans not in (1, 3):
            raise DataError(
                f"{type(self).__name__}: img_size must be >= 4 and in_chans 1 or 3, "
                f"got img_size={img_size}, in_chans={in_chans}"
            )
        self.img_size, self.in_chans = img_size, in_chans
        self.val_fraction, self.split_seed, self.augment = val_fraction, split_seed, augment
        self.max_value = 255.0

    def load(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(train_images, train_labels, test_images, test_labels) as uint8 (N,C,H,W) / int64 (N,)."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        """Load the arrays (once) and build the train / validation / test datasets."""
        if self.train_set is not None:
            return
        self.check()
        xtr, ytr, xte, yte = self.load()
        tr, va = split_indices(len(ytr), self.val_fraction, self.split_seed)
        kw = dict(
            img_size=self.img_size, in_chans=self.in_chans, mean=self.mean, std=self.std, max_value=self.max_value
        )
        self.train_set = ImageTensorDataset(xtr[tr], ytr[tr], augment=self.augment, **kw)
        self.val_set = ImageTensorDataset(xtr[va], ytr[va], **kw)
        self.test_set = ImageTensorDataset(xte, yte, **kw) if xte is not None else self.val_set


class DigitsDataModule(_InMemoryVision):
    """scikit-learn's bundled 8x8 handwritten digits (1,797 real images, 10 classes), resized to ``img_size``.

    Needs no download. The seeded split holds out ``val_fraction`` for validation; test = validation.
    """

    def __init__(
        self,
        img_size: int = 16,
        in_chans: int = 1,
        batch_size: int = 64,
        val_fraction: float = 0.2,
        split_seed: int = 0,
        num_workers: int = 0,
        eval_batch_size: int | None = None,
    ):
        super().__init__(img_size, in_chans, batch_size, val_fraction, split_seed, False, num_workers, eval_batch_size)
        self.max_value = 16.0  # digits pixels are 0..16
        self.mean, self.std = 0.30, 0.38  # of the 0..1-scaled digits

    def load(self):
        """The digits as (N, 1, 8, 8) tensors with values 0..16."""
        from sklearn.datasets import load_digits

        d = load_digits()
        x = torch.as_tensor(d.images, dtype=torch.uint8)[:, None]
        return x, torch.as_tensor(d.target, dtype=torch.long), None, None


def read_idx(path: Path) -> torch.Tensor:
    """Read an IDX file (optionally gzipped) of unsigned bytes: magic 0x0000080<ndim>, sizes, data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
        zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
        if zero != 0 or dtype != 0x08:
            raise ValueError(f"magic bytes {raw[:4].hex()} are not an unsigned-byte IDX header")
        dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
        n = 1
        for d in dims:
            n *= d
        body = raw[4 + 4 * ndim :]
        if len(body) != n:
            raise ValueError(f"header announces {dims} = {n} bytes but the file holds {len(body)}")
    except (OSError, ValueError, struct.error, EOFError) as exc:
        raise DataError(f"malformed IDX file {path}: {exc}") from exc
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(dims)


class MNISTDataModule(_InMemoryVision):
    """MNIST-format IDX files from a local directory (``train-images-idx3-ubyte[.gz]`` and friends).

    ``root`` may hold the four files directly or in ``raw/`` (torchvision's layout). Validation is a seeded
    split of the training files; test is the ``t10k`` set.
    """

    default_root: str | None = None
    how_to_get = (
        "download the four IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) into that directory"
    )
    files = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    mean, std = 0.13, 0.31

    def __init__(
        self,
        root: str | None = None,
        img_size: int = 28,
        in_chans: int = 1,
        batch_size: int = 128,
        val_fraction: float = 1 / 12,
        split_seed: int = 0,
        num_workers: int = 0,
        eval_batch_size: int | None = None,
    ):
        super().__init__(img_size, in_chans, batch_size, val_fraction, split_seed, False, num_workers, eval_batch_size)
        root = root or self.default_root
        if root is None:
            raise DataError(f"{type(self).__name__} needs data.root: a directory with the IDX files; {self.how_to_get}")
        self.root = Path(root).expanduser()

    def _find(self, stem: str) -> Path | None:
        for d in (self.root, self.root / "raw"):
            for name in (stem, stem + ".gz"):
                if (d / name).is_file():
                    return d / name
        return None

    def check(self) -> None:
        """Every one of the four IDX files must exist under ``root`` (or ``root/raw``)."""
        missing = [s for s in self.files if self._find(s) is None]
        if missing:
            raise DataError(
                f"{type(self).__name__}: {self.root} lacks {', '.join(f + '[.gz]' for f in missing)}; {self.how_to_get}"
            )

    def load(self):
        """The four IDX arrays as tensors; shapes are checked against each other."""
        xtr, ytr, xte, yte = (read_idx(self._find(s)) for s in self.files)
        for x, y, s in ((xtr, ytr, self.files[0]), (xte, yte, self.files[2])):
            if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
                raise DataError(
                    f"malformed IDX files under {self.root}: {s} has shape {tuple(x.shape)} but its "
                    f"labels have shape {tuple(y.shape)}"
                )
        return xtr[:, None], ytr.long(), xte[:, None], yte.long()


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST IDX files; by default where Debian's ``dataset-fashion-mnist`` package puts them."""

    default_root = "/usr/share/datasets/fashion-mnist"
    how_to_get = (
        "install them with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu, puts the files in "
        "/usr/share/datasets/fashion-mnist) or download the four IDX .gz files from "
        "https://github.com/zalandoresearch/fashion-mnist into that directory"
    )
    mean, std = 0.29, 0.35


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles only what a CIFAR-10 batch holds: dicts, lists, bytes, ints and numpy uint8 arrays. Any other
    global (``os.system``, ``builtins.eval``, ...) is refused, so a crafted file cannot run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        """Resolve an allowed global; anything else is an error."""
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it references {module}.{name}, which a CIFAR-10 batch never contains")
        return super().find_class(module, name)


class CIFAR10DataModule(_InMemoryVision):
    """CIFAR-10 "python version" batches (``data_batch_1..5``, ``test_batch``) from a local directory.

    ``root`` is the ``cifar-10-batches-py`` directory or its parent. Training uses crop + flip augmentation.
    The format is Python pickle: only the six batch files are read, with an unpickler that accepts nothing
    but the dicts, lists and uint8 arrays a batch holds (see the README on where to get the files).
    """

    how_to_get = (
        "download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and "
        "extract it there (tar xzf cifar-10-python.tar.gz)"
    )
    mean, std = 0.47, 0.25

    def __init__(
        self,
        root: str,
        img_size: int = 32,
        in_chans: int = 3,
        batch_size: int = 128,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        augment: bool = True,
        num_workers: int = 0,
        eval_batch_size: int | None = None,
    ):
        super().__init__(
            img_size, in_chans, batch_size, val_fraction, split_seed, augment, num_workers, eval_batch_size
        )
        root = Path(root).expanduser()
        self.root = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root

    def check(self) -> None:
        """All six batch files must exist."""
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        missing = [n for n in names if not (self.root / n).is_file()]
        if missing:
            raise DataError(f"CIFAR10DataModule: {self.root} lacks {', '.join(missing)}; {self.how_to_get}")

    def _batch(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        path = self.root / name
        try:
            with open(path, "rb") as f:
                d = _CifarUnpickler(f, encoding="bytes").load()
            data = d[b"data"]
            if getattr(data, "dtype", None) != "uint8" or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
                raise ValueError(f"its data is not an (N, 3072) uint8 array: {getattr(data, 'shape', type(data))}")
            x = torch.as_tensor(data, dtype=torch.uint8).reshape(-1, 3, 32, 32)
            y = torch.as_tensor(d[b"labels"], dtype=torch.long)
            if y.ndim != 1 or (len(y) and (int(y.min()) < 0 or int(y.max()) >= self.num_classes)):
                raise ValueError("its labels are not a list of class indices 0..9")
        except (
            OSError,
            pickle.UnpicklingError,
            KeyError,
            TypeError,
            ValueError,
            RuntimeError,
            EOFError,
            AttributeError,
            IndexError,
        ) as exc:
            raise DataError(
                f"malformed CIFAR-10 batch {path} ({type(exc).__name__}: {exc}); {self.how_to_get}"
            ) from exc
        if len(x) != len(y):
            raise DataError(f"malformed CIFAR-10 batch {path}: {len(x)} images but {len(y)} labels")
        return x, y

    def load(self):
        """The five training batches concatenated, and the test batch."""
        parts = [self._batch(f"data_batch_{i}") for i in range(1, 6)]
        xte, yte = self._batch("test_batch")
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]), xte, yte


class ImageFolderDataModule(BaseDataModule):
    """Any image folder: ``root/<class>/<image>``, or ``root/train/<class>/...`` + ``root/val/<class>/...``.

    Without a ``val`` folder a seeded ``val_fraction`` of the images is held out. Images are resized to
    ``img_size`` (shorter side) and center-cropped; training adds horizontal flips.
    """

    def __init__(
        self,
        root: str,
        img_size: int = 32,
        in_chans: int = 3,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        num_workers: int = 0,
        eval_batch_size: int | None = None,
    ):
        super().__init__(batch_size, num_workers, eval_batch_size)
        self.root = Path(root).expanduser()
        self.img_size, self.in_chans = img_size, in_chans
        self.val_fraction, self.split_seed = val_fraction, split_seed

    @property
    def train_root(self) -> Path:
        """The folder whose sub-folders are the training classes."""
        return self.root / "train" if (self.root / "train").is_dir() else self.root

    @property
    def num_classes(self) -> int:
        """Number of class sub-folders (known without reading any image)."""
        self.check()
        return sum(1 for e in os.scandir(self.train_root) if e.is_dir())

    def check(self) -> None:
        """``root`` must exist and hold at least two class sub-folders."""
        if not self.root.is_dir():
            raise DataError(
                f"ImageFolderDataModule: image folder {self.root} does not exist; point data.root at a "
                "directory laid out as <root>/<class_name>/<image files> (optionally with train/ and val/)"
            )
        if sum(1 for e in os.scandir(self.train_root) if e.is_dir()) < 2:
            raise DataError(
                f"ImageFolderDataModule: {self.train_root} needs at least two class sub-folders "
                "(<root>/<class_name>/<image files>)"
            )

    def setup(self, stage: str | None = None) -> None:
        """Index the image files and build the datasets (images are decoded lazily, per item)."""
        if self.train_set is not None:
            return
        self.check()
        from torchvision import datasets, transforms

        norm = transforms.Normalize([0.5] * self.in_chans, [0.5] * self.in_chans)
        base = [
            transforms.Grayscale(self.in_chans)
            if self.in_chans == 1
            else transforms.Lambda(lambda im: im.convert("RGB")),
            transforms.Resize(self.img_size),
            transforms.CenterCrop(self.img_size),
        ]
        t_eval = transforms.Compose(base + [transforms.ToTensor(), norm])
        t_train = transforms.Compose(base + [transforms.RandomHorizontalFlip(), transforms.ToTensor(), norm])
        if (self.root / "val").is_dir():
            self.train_set = datasets.ImageFolder(str(self.train_root), transform=t_train)
            self.val_set = datasets.ImageFolder(str(self.root / "val"), transform=t_eval)
        else:
            full_train = datasets.ImageFolder(str(self.train_root), transform=t_train)
            full_eval = datasets.ImageFolder(str(self.train_root), transform=t_eval)
            tr, va = split_indices(len(full_train), self.val_fraction, self.split_seed)
            self.train_set = torch.utils.data.Subset(full_train, tr.tolist())
            self.val_set = torch.utils.data.Subset(full_eval, va.tolist())
        test_dir = self.root / "test"
        self.test_set = datasets.ImageFolder(str(test_dir), transform=t_eval) if test_dir.is_dir() else self.val_set
