"""Ensembles: the mean (or a dev-tuned sum) of trained models' logits, evaluated and distilled like any model."""

from __future__ import annotations

import json

import numpy as np

from hmtc.loading import load_checkpoint
from hmtc.testing import tiny_tfidf_config_text


def test_ensemble_of_seeds_folders_evaluates_and_distils(run_config, tmp_path, invoke):
    runs = tmp_path / "runs"
    invoke("train", run_config, "--quiet", "--seeds", "3,5", "--set", "train.epochs=1", "--set", "name=a")
    invoke("train", run_config, "--quiet", "--seeds", "3,5", "--set", "train.epochs=1", "--set", "name=b",
           "--set", "model.options.filters=8")
    invoke("ensemble", runs / "a", runs / "b", "--out", runs / "ens")
    for seed in (3, 5):
        ckpt = load_checkpoint(runs / "ens" / f"seed-{seed}" / "best")
        assert ckpt.config.model.name == "ensemble" and len(ckpt.model.members) == 2
        assert "mean" not in ckpt.config.model.options          # as before --weights tune existed
        assert "weights_tuned" not in json.loads((runs / "ens" / f"seed-{seed}" / "run.json").read_text())
        texts = ["meow kitten", "oak leaf today"]
        parts = [load_checkpoint(runs / m / f"seed-{seed}" / "best").scores(texts) for m in ("a", "b")]
        np.testing.assert_allclose(ckpt.scores(texts), (parts[0] + parts[1]) / 2, rtol=1e-5, atol=1e-5)
    invoke("eval", runs / "ens", "--quiet")
    agg = json.loads((tmp_path / "records" / "ens.json").read_text())
    assert agg["n"] == 2 and agg["model"] == "ensemble"
    # each seed's record says how the ensemble was made and what its members' training cost
    for rec in agg["seed_records"]:
        members = [json.loads((runs / m / f"seed-{rec['seed']}" / "last" / "train_state.json").read_text())
                   for m in ("a", "b")]
        assert rec["train_seconds"] == round(sum(m["train_seconds"] for m in members), 1) > 0
        assert rec["command"].startswith("hmtc ensemble ") and rec["git_commit"]
    # distilled into one model per seed, each from its own seed's ensemble
    invoke("train", run_config, "--quiet", "--seeds", "3,5", "--set", "train.epochs=1", "--set", "name=student",
           "--set", f"train.teacher='{runs / 'ens'}'")
    assert json.loads((tmp_path / "records" / "student.json").read_text())["n"] == 2


def test_ensemble_errors(run_config, tmp_path, invoke):
    invoke("train", run_config, "--quiet", "--set", "train.epochs=1", "--set", "name=a")
    assert "at least 2 members" in invoke("ensemble", tmp_path / "runs" / "a", "--out", tmp_path / "e", code=2).output
    assert "not trained" in invoke("train", run_config, "--quiet", "--set", "model.name='ensemble'",
                                   "--set", "name=z", code=2).output


def test_tuned_weights_sum_a_neural_model_and_tfidf(run_config, tiny_dataset, tmp_path, invoke, monkeypatch):
    """--weights tune: a weighted sum on the first member's scale, tuned on the members' shared dev split
    (members on another split are refused), evaluated with the neural member's frozen states read
    from its store."""
    monkeypatch.setenv("HMTC_HOME", str(tmp_path / "home"))
    runs = tmp_path / "runs"
    invoke("train", run_config, "--quiet", "--set", "train.epochs=1", "--set", "name=a", "--set",
           "model.freeze_layers=1", "--set", "train.cache_frozen=true", "--set", "train.frozen_store=true")
    tfidf = tmp_path / "tiny-tfidf.toml"
    tfidf.write_text(tiny_tfidf_config_text(tiny_dataset, tmp_path), encoding="utf-8")
    invoke("train", tfidf, "--quiet", "--set", "name=t42")
    r = invoke("ensemble", runs / "a", runs / "t42", "--out", runs / "ens", "--weights", "tune")
    assert "tuned on" in r.output and "dev texts" in r.output
    ckpt = load_checkpoint(runs / "ens" / "best")
    options = ckpt.config.model.options
    assert options["mean"] is False and len(options["weights"]) == 2
    tuned = json.loads((runs / "ens" / "run.json").read_text())["weights_tuned"]
    assert tuned["split"] == "dev" and tuned["texts"] > 0 and len(tuned["members_micro_f1"]) == 2
    assert tuned["half_octave_steps"][0] == 0 and abs(tuned["half_octave_steps"][1]) <= 6
    assert 0 <= tuned["micro_f1"] <= 1
    texts = ["meow kitten", "oak leaf today"]
    parts = [load_checkpoint(runs / m / "best").scores(texts) for m in ("a", "t42")]
    w = options["weights"]
    np.testing.assert_allclose(ckpt.scores(texts), w[0] * parts[0] + w[1] * parts[1], rtol=1e-5, atol=1e-5)
    invoke("eval", runs / "ens", "--quiet")
    metrics = json.loads((runs / "ens" / "metrics.json").read_text())
    # the msml member's dev and test states, stored by its own evaluation, all read
    assert metrics["inference"]["stored_texts"] == metrics["inference"]["texts"]
    record = json.loads((tmp_path / "records" / "ens.json").read_text())
    assert record["config"]["model"]["options"]["weights"] == options["weights"]
    assert record["weights_tuned"] == tuned
    invoke("compare", runs / "a", runs / "ens", "--out", tmp_path / "cmp.md")
    row = (tmp_path / "cmp.md").read_text().splitlines()[-1].split(" | ")
    assert row[1] == "ensemble" and row[-3] != "–"           # its model and its members' training time

    invoke("train", tfidf, "--quiet", "--set", "name=t7", "--set", "train.seed=7")
    r = invoke("ensemble", runs / "a", runs / "t7", "--out", runs / "bad", "--weights", "tune", code=2)
    assert "another dev split" in r.output and "t7" in r.output
    assert "comma-separated numbers" in invoke("ensemble", runs / "a", runs / "t42", "--out", runs / "x",
                                               "--weights", "1,heavy", code=2).output
    assert "one positive weight per member" in invoke("ensemble", runs / "a", runs / "t42", "--out", runs / "x",
                                                      "--weights", "0,1", code=2).output
    assert not (runs / "x").exists()
    assert "1 weight(s) for 2 members" in invoke("ensemble", runs / "a", runs / "t42", "--out", runs / "x",
                                                 "--weights", "2", code=2).output
