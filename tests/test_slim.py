"""Small artefacts: a finished run's best/ with its vocabulary pruned and its weights in float16
(hmtc.slim); texts of the corpus score as before, other texts still score."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from hmtc.loading import load_checkpoint
from hmtc.config import load_config
from hmtc.testing import make_texts
from hmtc.train import Trainer

SEEN = ["meow kitten here", "oak leaf today", "rose petal thorn and a puppy", "dog bark"]


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory, tiny_encoder, tiny_dataset):
    from hmtc.testing import tiny_config_text
    folder = tmp_path_factory.mktemp("slim")
    (folder / "tiny.toml").write_text(tiny_config_text(tiny_dataset, tiny_encoder, folder), encoding="utf-8")
    cfg = load_config(folder / "tiny.toml", ["train.epochs=1", "train.record_dir=''"])   # neither pruned nor cast
    return Trainer(cfg, folder / "run", quiet=True).fit()


def slimmed(run, tmp_path, texts, **kw):
    from hmtc.slim import slim_checkpoint
    copy = tmp_path / "best"
    shutil.copytree(run / "best", copy)
    info = slim_checkpoint(copy, texts, **kw)
    return load_checkpoint(copy), info          # the manifest of the new version checks


def test_pruning_keeps_the_scores_of_the_corpus(plain_run, tmp_path):
    before = load_checkpoint(plain_run / "best")
    after, info = slimmed(plain_run, tmp_path, SEEN, dtype="float32", keep_top=0)
    assert info["vocab_after"] < info["vocab_before"] and info["bytes_after"] < info["bytes_before"]
    assert json.loads((tmp_path / "best" / "encoder" / "config.json").read_text())["vocab_size"] == info["vocab_after"]
    np.testing.assert_allclose(after.scores(SEEN), before.scores(SEEN), rtol=1e-5, atol=1e-6)
    unseen = ["zebra quokka meow", "kitten"]               # unknown to the corpus: segmented into kept pieces
    assert np.isfinite(after.scores(unseen)).all()
    for text in ["puppy thorn", "bark petal oak", "zebra"]:      # pieces outside the corpus: single characters kept
        unk = [tok(text)["input_ids"].count(tok.unk_token_id) for tok in (before.model.tokenizer, after.model.tokenizer)]
        assert unk[1] == unk[0], (text, unk)


def test_the_most_probable_pieces_are_kept_whatever_the_corpus(plain_run, tmp_path):
    import json as _json
    vocab = _json.loads((plain_run / "best" / "tokenizer" / "tokenizer.json").read_text())["model"]["vocab"]
    by_id = {i: piece for piece, i in vocab.items()}
    after, info = slimmed(plain_run, tmp_path, ["cat"], dtype="float32", keep_top=12)
    kept = _json.loads((tmp_path / "best" / "tokenizer" / "tokenizer.json").read_text())["model"]["vocab"]
    assert {by_id[i] for i in range(12)} <= set(kept)           # WordPiece: the first ids
    assert info["vocab_after"] < info["vocab_before"]


def test_float16_halves_the_weights_and_rounds_only(plain_run, tmp_path):
    before = load_checkpoint(plain_run / "best")
    after, info = slimmed(plain_run, tmp_path, SEEN, prune=False, dtype="float16")
    assert "vocab_after" not in info and info["bytes_after"] < 0.55 * info["bytes_before"]
    texts = [row["text"] for row in make_texts(20, 3)]
    np.testing.assert_allclose(after.scores(texts), before.scores(texts), atol=2e-2)


def test_a_finished_run_is_slimmed_by_default(run_config, tmp_path, invoke, tiny_encoder):
    defaults = [f"train.{k}={v}" for k, v in (("keep_last", "false"), ("prune_vocab", "'auto'"), ("save_dtype", "float16"))]
    invoke("train", run_config, "--quiet", "--set", "train.epochs=1", *[a for d in defaults for a in ("--set", d)])
    run = tmp_path / "runs" / "tiny-msml"
    state = json.loads((run / "last" / "train_state.json").read_text())
    slim = state["slim"]
    full = json.loads((tiny_encoder / "config.json").read_text())["vocab_size"]
    assert slim["vocab_before"] == full and slim["vocab_after"] <= full and slim["dtype"] == "float16"
    import safetensors.torch
    tensors = safetensors.torch.load_file(str(run / "best" / "model.safetensors"))
    assert {str(v.dtype) for v in tensors.values() if v.is_floating_point()} == {"torch.float16"}
    assert json.loads((run / "metrics.json").read_text())["test"]["micro_f1"] >= 0     # evaluated on the slim copy
    assert not [p for p in run.iterdir() if p.name.startswith(".best.v") and p.name != (run / "best").readlink().name]


def test_a_few_shot_draw_keeps_the_whole_vocabulary_by_default(run_config, tmp_path, invoke):
    """auto: a few-shot draw's texts cover too few words to prune to (GoEmotions K = 8 lost 0.9
    leaf macro points pruned, experiments/artefacts.md); float16 still applies."""
    invoke("train", run_config, "--quiet", "--no-eval", "--set", "train.epochs=1", "--set", "data.shots=2",
           "--set", "train.prune_vocab='auto'", "--set", "train.save_dtype=float16", "--set", "train.keep_last=false")
    slim = json.loads((tmp_path / "runs" / "tiny-msml" / "last" / "train_state.json").read_text())["slim"]
    assert "vocab_after" not in slim and slim["dtype"] == "float16"


def test_save_every_zero_writes_no_resume_state_and_trains_the_same(run_config, tmp_path, invoke, monkeypatch):
    """train.save_every = 0: no last/ weights while training (only the finished run's
    train_state.json), and the same best weights as saving every epoch."""
    from hmtc.train import Trainer
    saves = []
    real = Trainer._save_state
    monkeypatch.setattr(Trainer, "_save_state", lambda self, folder, *a: saves.append(folder) or real(self, folder, *a))
    best = {}
    for every in (1, 0):
        name = f"every-{every}"
        invoke("train", run_config, "--quiet", "--no-eval", "--set", "train.epochs=2", "--set", f"name='{name}'",
               "--set", f"train.save_every={every}", "--set", "train.keep_last=false")
        run = tmp_path / "runs" / name
        assert "model.safetensors" not in {p.name for p in (run / "last").iterdir()}
        best[every] = (run / "best" / "model.safetensors").read_bytes()
    assert len(saves) == 2 and best[0] == best[1]          # two epochs saved with 1, none with 0
