"""Shared fixtures: the tiny random BERT and the tiny labelled dataset of :mod:`hmtc.testing`.

Nothing here touches the network or a big encoder.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
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


@dataclass
class Result:
    exit_code: int
    output: str


@pytest.fixture
def invoke(capsys, monkeypatch):
    """The real entry point (``hmtc.cli.main``: user errors exit 2 with one line); ``code`` is
    the exit code the call must end with."""
    from hmtc.cli import main

    def call(*args, code: int = 0) -> Result:
        monkeypatch.setattr(sys, "argv", ["hmtc", *map(str, args)])
        try:
            main()
            got = 0
        except SystemExit as e:
            got = e.code or 0
        out = capsys.readouterr()
        r = Result(got, out.out + out.err)
        assert got == code, r.output
        return r
    return call
