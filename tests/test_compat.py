"""Checkpoints saved by earlier versions (kept in tests/fixtures/) load and predict as they did."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hmtc.loading import load_checkpoint
from hmtc.predict import predict_texts

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("name", ["ckpt-0.1-msml", "ckpt-0.1-tfidf"])
def test_an_old_checkpoint_predicts_the_same_labels(name):
    expected = json.loads((FIXTURES / f"{name}.predictions.json").read_text(encoding="utf-8"))
    ckpt = load_checkpoint(FIXTURES / name)
    rows = list(predict_texts(ckpt, expected["texts"]))
    assert [r["labels"] for r in rows] == [r["labels"] for r in expected["predictions"]]
    np.testing.assert_allclose(ckpt.scores(expected["texts"]), np.asarray(expected["scores"]), rtol=1e-5, atol=1e-5)


def test_an_old_checkpoints_config_is_upgraded_where_it_is_read(tmp_path):
    """A stored config gains the keys added since it was written (their defaults, or what runs
    then did), so a fine-tune that starts from an old run (train.init_from) reads them like any
    other; what it stored is kept."""
    from hmtc.checkpoint import read_config
    from hmtc.config import DEFAULTS, check_config
    cfg = read_config(FIXTURES / "ckpt-0.1-msml")
    tables = cfg.to_dict()
    for section, keys in DEFAULTS.items():
        assert set(keys) <= set(tables[section]), section
    assert cfg.train.save_every == 1 and cfg.train.prune_vocab == "auto"
    assert cfg.decode.complete == "auto"                 # stored: kept
    check_config({k: v for k, v in tables.items() if k != "name"})
    stored = json.loads((FIXTURES / "ckpt-0.1-msml" / "checkpoint.json").read_text(encoding="utf-8"))["config"]
    stored["decode"].pop("complete")
    meta = tmp_path / "c"
    meta.mkdir()
    (meta / "checkpoint.json").write_text(json.dumps({"config": stored}), encoding="utf-8")
    assert read_config(meta).decode.complete is False       # absent: what runs then did
