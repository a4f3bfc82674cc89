"""Training end to end on a tiny random BERT: learning, CLI, save/load, resume, kill."""

from __future__ import annotations

from dataclasses import replace
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from typer.testing import CliRunner

from hmtc.loading import load_checkpoint
from hmtc.cli import app
from hmtc.config import load_config
from hmtc.errors import ConfigError, HmtcError
from hmtc.models import create_model
from hmtc.train import Trainer

runner = CliRunner()


def invoke(*args):
    r = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r


def test_overfits_a_tiny_set(run_config, tmp_path):
    from hmtc.decode import decode
    from hmtc.metrics import evaluate
    cfg = load_config(run_config, ["train.epochs=25", "data.dev_fraction=0.1", "train.lr=2e-3",
                                   "train.record_dir=''"])
    trainer = Trainer(cfg, tmp_path / "overfit", quiet=True)
    trainer.fit()
    data = trainer.data_
    ckpt = load_checkpoint(tmp_path / "overfit" / "last")
    scores = ckpt.model.score_ids(data.token_ids["train"])
    f1 = evaluate(data.labels["train"], decode(scores, data.index), data.index)["micro_f1"]
    first, last = trainer.state_.history[0]["train_loss"], trainer.state_.history[-1]["train_loss"]
    assert last < 0.25 * first
    assert f1 > 0.95


def test_cli_train_eval_predict(run_config, tmp_path):
    invoke("train", run_config, "--quiet")
    run = tmp_path / "runs" / "tiny-msml"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["consistency"]["after"]["inconsistent_samples"] == 0
    for key in ("micro_f1", "macro_f1", "hier_f1", "c_micro_f1", "per_level"):
        assert key in metrics["test"]
    record = json.loads((tmp_path / "records" / "tiny-msml.json").read_text())
    for key in ("command", "git_commit", "seed", "train_seconds", "machine", "metrics", "config", "dataset"):
        assert record[key] is not None, key
    assert record["dataset_protocol"] == "raw"          # how the texts were cleaned: not at all
    assert (run / "best" / "decode.json").is_file()

    r = invoke("eval", run, "--json", "--quiet", "--overwrite")
    assert json.loads(r.stdout)["test"]["micro_f1"] == pytest.approx(metrics["test"]["micro_f1"])

    r = invoke("predict", run, "meow kitten here", "oak leaf today")
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["text"] for row in rows] == ["meow kitten here", "oak leaf today"]
    for row in rows:
        for path in row["paths"]:
            assert len(path) >= 1
        assert set(row["scores"]) == set(row["labels"])
        # consistent: a leaf is never predicted without its parent
        assert all(lab.split("-")[0] in row["labels"] for lab in row["labels"])

    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps({"text": t}) for t in ["dog bark", "rose petal"] * 5) + "\n")
    out = tmp_path / "out.jsonl"
    invoke("predict", run, "--input", src, "--output", out, "--chunk", "3")
    assert len(out.read_text().splitlines()) == 10


def test_save_load_gives_identical_predictions(run_config, tmp_path):
    cfg = load_config(run_config, ["train.epochs=1", "train.record_dir=''"])
    trainer = Trainer(cfg, tmp_path / "r", quiet=True)
    trainer.fit()
    ids = trainer.data_.token_ids["test"]
    trained = trainer.train_model_.score_ids(ids)          # the model in memory, as training left it
    loaded = load_checkpoint(tmp_path / "r" / "last").model.score_ids(ids)
    assert loaded.shape == (len(ids), 6) and np.array_equal(loaded, trained)
    assert not np.array_equal(trained, create_model(cfg, trainer.data_.index).score_ids(ids))   # not untrained


def _weights(path: Path) -> dict:
    return safetensors.torch.load_file(str(path / "model.safetensors"))


def test_resume_matches_an_uninterrupted_run(run_config, tmp_path):
    overrides = ["train.epochs=3", "train.record_dir=''", "train.ema=0.9"]
    Trainer(load_config(run_config, overrides), tmp_path / "straight", quiet=True).fit()
    Trainer(load_config(run_config, overrides), tmp_path / "split", quiet=True, stop_after_epochs=1).fit()
    state = json.loads((tmp_path / "split" / "last" / "train_state.json").read_text())
    assert state["epoch"] == 1
    t = Trainer(load_config(run_config, overrides), tmp_path / "split", resume=True, quiet=True)
    t.fit()
    assert t.state_.epoch == 3
    a, b = _weights(tmp_path / "straight" / "last"), _weights(tmp_path / "split" / "last")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_killed_run_resumes_from_its_last_checkpoint(run_config, tmp_path):
    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "hmtc", "train", str(run_config), "--out", str(run), "--quiet",
           "--set", "train.epochs=400", "--set", "train.record_dir=''"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = run / "last" / "train_state.json"
    deadline = time.time() + 600                      # generous: a loaded machine is slow to start
    while time.time() < deadline and not state.is_file() and proc.poll() is None:
        time.sleep(0.05)
    assert state.is_file(), "no checkpoint was written before the deadline"
    time.sleep(0.3)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = json.loads(state.read_text())["epoch"]
    assert 1 <= done < 400
    load_checkpoint(run / "last")                     # the checkpoint on disk is whole
    invoke("train", run_config, "--out", run, "--resume", "--quiet", "--no-eval", "--accept-changes",
           "--set", f"train.epochs={done + 1}", "--set", "train.record_dir=''")      # shortened on purpose
    assert json.loads(state.read_text())["epoch"] == done + 1


def test_existing_run_is_not_overwritten(run_config, tmp_path):
    cfg = load_config(run_config, ["train.epochs=1", "train.record_dir=''"])
    Trainer(cfg, tmp_path / "r", quiet=True).fit()
    with pytest.raises(HmtcError, match="--resume"):
        Trainer(cfg, tmp_path / "r", quiet=True).fit()


def test_config_errors(run_config):
    with pytest.raises(ConfigError, match="unknown key train.epoch"):
        load_config(run_config, ["train.epoch=3"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(run_config, ["epochs"])
    cfg = load_config(run_config, ["train.lr=3e-5", "model.options.filters=8"])
    assert cfg.train.lr == 3e-5 and cfg.model.options["filters"] == 8
    assert cfg.model.options["tower_dim"] == 32          # file options kept


@pytest.mark.parametrize("model_name", ["msml", "flat"])
def test_scores_do_not_depend_on_batch_padding(run_config, model_name):
    from hmtc.batching import tokenize
    from hmtc.models.batches import collate
    from hmtc.data.prepare import taxonomy_for
    cfg = load_config(run_config, [f"model.name='{model_name}'"])
    if model_name == "flat":
        cfg = replace(cfg, model=replace(cfg.model, options={"head": "textcnn", "dropout": 0.0}))
    model = create_model(cfg, taxonomy_for(cfg).compile())
    tok = model.tokenizer
    model.eval()
    short, long_ = "cat", "dog bark puppy oak leaf tree rose petal the a is was here there"
    ids = tokenize(tok, [short, long_], 32)
    with torch.inference_mode():
        alone = model(*collate(ids[:1], 0)).logits
        padded = model(*collate(ids, 0)).logits[:1]
    assert torch.allclose(alone, padded, atol=1e-5)


def test_msml_handles_ragged_depth_and_dags(tiny_encoder):
    from hmtc.models import MODELS, make_config
    from hmtc.models.encoder import TextEncoder, load_backbone
    from hmtc.taxonomy import Taxonomy
    tax = Taxonomy.parse("ROOT\n  a\n    a1\n      a1x\n  b\n    &a1x\n  c\n")   # depth 1..3, a1x has 2 parents
    index = tax.compile()
    model = MODELS.get("msml")(TextEncoder(load_backbone(str(tiny_encoder))), index,
                               make_config("msml", {"filters": 8, "tower_dim": 16}))
    assert len(model.towers) == index.depth == 3
    ids, mask = torch.randint(5, 20, (3, 7)), torch.ones(3, 7, dtype=torch.long)
    y = torch.as_tensor(index.indicator([["a1x"], ["c"], ["a1"]]), dtype=torch.float32)
    out = model(ids, mask, labels=y)
    assert out.logits.shape == (3, index.n_nodes) and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is not None for p in model.classifiers.parameters())


def test_early_stopping_ends_the_run(run_config, tmp_path):
    # a learning rate of 0 keeps dev flat, so patience 1 stops after the second epoch
    cfg = load_config(run_config, ["train.epochs=6", "train.patience=1", "train.lr=0.0",
                                   "train.head_lr=0.0", "train.record_dir=''"])
    t = Trainer(cfg, tmp_path / "es", quiet=True)
    t.fit()
    assert len(t.state_.history) == 2 and t.state_.best_epoch == 1


def test_eval_with_per_label_thresholds(run_config, tmp_path):
    invoke("train", run_config, "--quiet", "--set", "decode.per_label=true", "--set", "train.epochs=1")
    metrics = json.loads((tmp_path / "runs" / "tiny-msml" / "metrics.json").read_text())
    assert len(metrics["decode"]["per_label_thresholds"]) == 6
    assert metrics["consistency"]["after"]["inconsistent_samples"] == 0


def test_progress_bars_render_without_quiet(run_config, tmp_path):
    """The progress display (not --quiet) renders every task: epochs, dev prediction, the cache."""
    import io

    from rich.console import Console
    out = io.StringIO()
    cfg = load_config(run_config, ["train.epochs=1", "train.record_dir=''", "model.freeze_layers=1",
                                   "train.cache_frozen=true"])
    Trainer(cfg, tmp_path / "r", console=Console(file=out, force_terminal=True, width=160)).fit()
    text = out.getvalue()
    assert "epoch 1/1" in text and "samples/s" in text and "cache frozen layers" in text
