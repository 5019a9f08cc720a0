"""WordNetGlossesDataModule: the corpus is the lemma/gloss pairs timm ships, shuffled once, split at the tail."""

from __future__ import annotations

import csv

import pytest
import torch

from normlight.data import DataError, PydocTextDataModule, WordNetGlossesDataModule


def _pairs() -> dict[str, tuple[str, str]]:
    """synset id -> (lemmas, gloss), read independently of the module with the csv reader."""
    d = WordNetGlossesDataModule.directory()
    tables = []
    for name in ("imagenet_synset_to_lemma.txt", "imagenet_synset_to_definition.txt"):
        with open(d / name, newline="", encoding="utf-8") as f:
            tables.append({row[0]: row[1].strip() for row in csv.reader(f, delimiter="\t") if len(row) == 2})
    lemmas, glosses = tables
    return {k: (lemmas[k], g) for k, g in glosses.items() if g}


def test_corpus_is_every_synset_once_and_larger_than_pydoc():
    text = WordNetGlossesDataModule().text()
    lines = text.splitlines()
    pairs = _pairs()
    assert sorted(lines) == sorted(f"{lem}: {g}" for lem, g in pairs.values())
    assert (
        "organism, being: a living thing that has (or can develop) the ability to act or function independently"
        in lines
    )
    pydoc = PydocTextDataModule().text()
    assert len(text.encode()) > 4 * len(pydoc.encode())


def test_shuffle_is_seeded_and_splits_are_disjoint_tails():
    a, b, c = (WordNetGlossesDataModule(block_size=32, shuffle_seed=s) for s in (0, 0, 1))
    assert a.text() == b.text() != c.text()
    a.setup()
    tokens = torch.cat([a.train_set.tokens, a.val_set.tokens])
    assert tokens.numel() == len(a.text().encode())  # train + val = the whole stream, no overlap
    x, y = next(iter(a.val_dataloader()))
    assert x.shape == (16, 32) and torch.equal(x[:, 1:], y[:, :-1])


def test_missing_files_are_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(WordNetGlossesDataModule, "directory", staticmethod(lambda: tmp_path))
    with pytest.raises(DataError, match=r"lacks imagenet_synset_to_lemma.txt, imagenet_synset_to_definition.txt"):
        WordNetGlossesDataModule().setup()
