"""Ensembles: the mean of trained models' logits, evaluated and distilled like any model."""

from __future__ import annotations

import json

import numpy as np

from hmtc.checkpoint import load_checkpoint




def test_ensemble_of_seeds_folders_evaluates_and_distils(run_config, tmp_path, invoke):
    runs = tmp_path / "runs"
    invoke("train", run_config, "--quiet", "--seeds", "3,5", "--set", "train.epochs=1", "--set", "name=a")
    invoke("train", run_config, "--quiet", "--seeds", "3,5", "--set", "train.epochs=1", "--set", "name=b",
           "--set", "model.options.filters=8")
    invoke("ensemble", runs / "a", runs / "b", "--out", runs / "ens")
    for seed in (3, 5):
        ckpt = load_checkpoint(runs / "ens" / f"seed-{seed}" / "best")
        assert ckpt.config["model"]["name"] == "ensemble" and len(ckpt.model.members) == 2
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
