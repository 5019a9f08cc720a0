"""DataModules: embedded defaults (no download) and real datasets read from local files.

Vision:   DigitsDataModule (scikit-learn's bundled digits), MNISTDataModule / FashionMNISTDataModule (IDX files),
          CIFAR10DataModule (python batches), ImageFolderDataModule (any folder of class sub-folders).
Language: PydocTextDataModule (CPython's bundled pydoc_data text), WordNetGlossesDataModule (the WordNet glosses
          timm ships, 4.5x larger), TextFilesDataModule (any text files).

Every DataModule exposes the shape facts a model must agree with (vision: ``num_classes``, ``img_size``,
``in_chans``; language: ``vocab_size``, ``block_size``) and ``check()``, which raises :class:`DataError`
naming a missing or malformed path and how to obtain the data. Nothing is ever downloaded.
"""

from normlight.data.common import DataError
from normlight.data.text import PydocTextDataModule, TextFilesDataModule, WordNetGlossesDataModule
from normlight.data.vision import (
    CIFAR10DataModule,
    DigitsDataModule,
    FashionMNISTDataModule,
    ImageFolderDataModule,
    MNISTDataModule,
)

__all__ = [
    "CIFAR10DataModule",
    "DataError",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "ImageFolderDataModule",
    "MNISTDataModule",
    "PydocTextDataModule",
    "TextFilesDataModule",
    "WordNetGlossesDataModule",
]
