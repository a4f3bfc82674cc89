"""Shared fixtures: the tiny random BERT and the tiny labelled dataset of :mod:`hmtc.testing`.

Nothing here touches the network or a big encoder.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import PreTrainedTokenizerFast

import hmtc.testing as tiny
from hmtc.testing import FILLER, TAXONOMY, WORDS, make_texts, tiny_config_text  # noqa: F401  (used by tests)

@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide random BERT with a WordPiece tokenizer over the test vocabulary."""
    folder = tiny.tiny_encoder(tmp_path_factory.mktemp("tiny-bert"))
    tok = PreTrainedTokenizerFast.from_pretrained(folder)
    assert tok("cat dog")["input_ids"][0] == 2 and tok("cat dog")["input_ids"][-1] == 3
    return folder


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A JSONL dataset (train/test) with its TOML card and taxonomy; returns the TOML path."""
    return tiny.tiny_dataset(tmp_path_factory.mktemp("tiny-data"))


@pytest.fixture
def run_config(tmp_path, tiny_encoder, tiny_dataset) -> Path:
    cfg = tmp_path / "tiny-msml.toml"
    cfg.write_text(tiny_config_text(tiny_dataset, tiny_encoder, tmp_path), encoding="utf-8")
    return cfg
