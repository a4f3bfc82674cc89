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
