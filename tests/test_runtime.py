"""The torch-free ONNX path (:mod:`hmtc.runtime`): the same ids as transformers' tokenizer, the
same scores and predictions as the engine loaded through torch, and ``hmtc predict --engine onnx``
that imports neither torch nor transformers."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from transformers import AutoTokenizer

from hmtc.batching import pad, tokenize
from hmtc.config import load_config
from hmtc.errors import HmtcError
from hmtc.models.batches import collate
from hmtc.runtime import FastTokenizer, load_onnx
from hmtc.train import Trainer

TEXTS = ["cat meow here", "oak leaf tree today " * 30, "dog", "a tree", "ünïcode cat Dog", "   "]


def test_fast_tokenizer_gives_transformers_ids_and_padding(tiny_encoder):
    ref = AutoTokenizer.from_pretrained(tiny_encoder)
    for max_length in (5, 16, 64):
        tok = FastTokenizer(tiny_encoder, max_length)
        assert tok.ids(TEXTS) == tokenize(ref, TEXTS, max_length)
        assert tok.pad_token_id == ref.pad_token_id
    ids = tokenize(ref, TEXTS, 16)
    x, mask = pad(ids, 0)
    tx, tmask = collate(ids, 0)
    assert x.dtype == np.int64 and (x == tx.numpy()).all() and (mask == tmask.numpy()).all()


def test_a_folder_without_tokenizer_json_is_one_error(tmp_path):
    with pytest.raises(HmtcError, match="tokenizer.json"):
        FastTokenizer(tmp_path, 16)


@pytest.fixture
def exported(run_config, tmp_path):
    """A conditional MSML run (path logits) exported to ONNX."""
    pytest.importorskip("onnxruntime")
    from hmtc.export import export_onnx
    cfg = load_config(run_config, ["train.epochs=1", "train.record_dir=''"])
    cfg = cfg.merged({"model": {"options": {"conditional": True, "loss": "bce"}}})
    Trainer(cfg, tmp_path / "r", quiet=True).fit()
    export_onnx(tmp_path / "r" / "best")
    return tmp_path / "r"


def test_load_onnx_scores_as_the_engine_loaded_through_torch(exported):
    from hmtc.loading import load_for_inference
    from hmtc.predict import predict_texts
    best = exported / "best"
    for engine in ("onnx", "onnx-int8"):
        ref, got = load_for_inference(best, engine, threads=1), load_onnx(best, engine, threads=1)
        assert got.path_scores and ref.path_scores      # the graph's metadata says what the model says
        assert np.array_equal(got.scores(TEXTS[:5]), ref.scores(TEXTS[:5]))
        assert list(predict_texts(got, TEXTS, all_scores=True)) == list(predict_texts(ref, TEXTS, all_scores=True))
    with pytest.raises(HmtcError, match="unknown ONNX engine"):
        load_onnx(best, "torch")


def test_predict_with_an_onnx_engine_imports_no_torch(exported):
    """The cold path: a fresh interpreter runs ``hmtc predict RUN text --engine onnx-int8`` and
    ends with neither torch nor transformers imported, printing what the torch-loaded engine predicts."""
    from hmtc.loading import load_for_inference
    from hmtc.predict import predict_texts
    code = ("import sys\nfrom hmtc.cli import main\n"
            f"sys.argv = ['hmtc', 'predict', {str(exported)!r}, 'cat meow here', 'a tree', '--engine', 'onnx-int8']\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    want = list(predict_texts(load_for_inference(exported / "best", "onnx-int8", threads=1), ["cat meow here", "a tree"]))
    assert [json.loads(line) for line in r.stdout.splitlines()] == want
