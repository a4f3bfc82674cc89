"""Seed-averaged runs, record identity and configs that include a base."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

from hmtc.config import load_config
from hmtc.errors import ConfigError, HmtcError
from hmtc.record import aggregate_records, run_key, write_record
from hmtc.seeds import parse_seeds





def _rec(seed: int, micro: float, l1: float, l2: float) -> dict:
    return {"seed": seed, "dataset": "d", "model": "msml", "encoder": "e", "train_seconds": 10.0 * seed,
            "metrics": {"micro_f1": micro, "inconsistent_samples": 0.0,
                        "per_level": [{"level": 1, "micro_f1": l1, "macro_f1": l1 / 2},
                                      {"level": 2, "micro_f1": l2, "macro_f1": l2 / 2}]}}


def test_aggregate_is_mean_and_sample_std():
    agg = aggregate_records([_rec(1, 0.90, 0.5, 0.1), _rec(2, 0.92, 0.7, 0.2), _rec(3, 0.94, 0.9, 0.6)])
    assert agg["n"] == 3 and agg["seeds"] == [1, 2, 3]
    assert agg["metrics"]["micro_f1"] == pytest.approx(0.92)
    assert agg["metrics_std"]["micro_f1"] == pytest.approx(0.02)          # sqrt((.02² + 0 + .02²) / 2)
    assert agg["metrics"]["per_level"][1]["micro_f1"] == pytest.approx(0.3)
    assert agg["metrics_std"]["per_level"][1]["micro_f1"] == pytest.approx(0.264575, abs=1e-6)
    assert agg["metrics_std"]["per_level"][0]["macro_f1"] == pytest.approx(0.1)
    assert agg["per_seed"]["L2_micro_f1"] == [0.1, 0.2, 0.6]
    assert agg["metrics_std"]["inconsistent_samples"] == 0.0
    assert agg["train_seconds"] == 20.0
    assert [r["seed"] for r in agg["seed_records"]] == [1, 2, 3]
    one = aggregate_records([_rec(7, 0.5, 0.5, 0.5)])
    assert one["metrics_std"]["micro_f1"] == 0.0 and one["n"] == 1


def test_parse_seeds():
    assert parse_seeds("42, 43,44") == [42, 43, 44]
    assert parse_seeds([1, 2]) == [1, 2] and parse_seeds(None) == [] and parse_seeds([]) == []
    with pytest.raises(ConfigError, match="integers"):
        parse_seeds("42,x")
    with pytest.raises(ConfigError, match="repeat"):
        parse_seeds("1,1")


def test_base_configs_merge_in_order(tmp_path):
    (tmp_path / "a.toml").write_text('name = "a"\n[train]\nepochs = 5\nlr = 1e-3\n[model]\n'
                                     'options = { filters = 8, tower_dim = 16 }\n')
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.toml").write_text('base = "../a.toml"\n[train]\nlr = 2e-3\n[model]\n'
                                             'options = { filters = 4 }\n')
    (tmp_path / "c.toml").write_text('base = "sub/b.toml"\nname = "cee"\n[train]\nepochs = 7\n')
    c = load_config(tmp_path / "c.toml")
    assert (c.name, c.train.epochs, c.train.lr) == ("cee", 7, 2e-3)
    assert c.model.options == {"filters": 4, "tower_dim": 16}     # table merged key by key
    b = load_config(tmp_path / "sub" / "b.toml")
    assert b.name == "b" and b.train.epochs == 5                # the name is never inherited
    assert load_config(tmp_path / "c.toml", ["train.lr=5e-4"]).train.lr == 5e-4


def test_base_cycle_and_missing_base_are_clear_errors(tmp_path):
    (tmp_path / "x.toml").write_text('base = "y.toml"\n')
    (tmp_path / "y.toml").write_text('base = "x.toml"\n')
    with pytest.raises(ConfigError, match="cycle: x.toml -> y.toml -> x.toml"):
        load_config(tmp_path / "x.toml")
    (tmp_path / "z.toml").write_text('base = "nope.toml"\n')
    with pytest.raises(ConfigError, match="nope.toml: base of .*z.toml: config file not found"):
        load_config(tmp_path / "z.toml")
    (tmp_path / "w.toml").write_text('base = 3\n')
    with pytest.raises(ConfigError, match="base must be a config file name"):
        load_config(tmp_path / "w.toml")


def test_set_name_and_names_that_escape(run_config):
    assert load_config(run_config, ["name=other"]).name == "other"
    for bad in ("../up", "/abs/x", "a/../../b"):
        with pytest.raises(ConfigError, match="relative name"):
            load_config(run_config, [f"name='{bad}'"])


def test_run_key(tmp_path):
    assert run_key(tmp_path / "runs" / "a" / "seed-3", tmp_path / "runs") == "a/seed-3"
    assert run_key(tmp_path / "elsewhere" / "b", tmp_path / "runs") == "b"


def test_write_record_never_replaces_without_overwrite(tmp_path):
    path = tmp_path / "r" / "x.json"
    write_record(path, {"a": 1})
    with pytest.raises(HmtcError, match="record of this run exists"):
        write_record(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 1}
    write_record(path, {"a": 3}, overwrite=True)
    assert json.loads(path.read_text()) == {"a": 3}
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.json"]     # no temp file left behind


def _digest(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_run_twice_is_refused_before_training(run_config, tmp_path, invoke):
    invoke("train", run_config, "--quiet", "--set", "train.epochs=1")
    records = tmp_path / "records"
    before = _digest(records)
    assert list(before) == ["tiny-msml.json"]
    r = invoke("train", run_config, "--quiet", "--set", "train.epochs=1", code=2)
    assert "record of this run exists" in r.output and "--overwrite" in r.output
    assert _digest(records) == before
    # another name is another run; --out names the record after its folder
    invoke("train", run_config, "--quiet", "--set", "train.epochs=1", "--set", "name=again")
    invoke("train", run_config, "--quiet", "--set", "train.epochs=1", "--out", tmp_path / "runs" / "x" / "y")
    assert sorted(_digest(records)) == ["again.json", "tiny-msml.json", "x/y.json"]
    r = invoke("eval", tmp_path / "runs" / "tiny-msml", "--quiet", code=2)
    assert "record of this run exists" in r.output
    invoke("eval", tmp_path / "runs" / "tiny-msml", "--quiet", "--overwrite")


def test_seeds_train_each_seed_and_write_the_mean_record(run_config, tmp_path, invoke):
    r = invoke("train", run_config, "--quiet", "--seeds", "3,5", "--set", "train.epochs=1")
    assert "mean ± std" in r.output
    run, records = tmp_path / "runs" / "tiny-msml", tmp_path / "records"
    for seed in (3, 5):
        assert (run / f"seed-{seed}" / "metrics.json").is_file()
        rec = json.loads((records / "tiny-msml" / f"seed-{seed}.json").read_text())
        assert rec["seed"] == seed and rec["config"]["train"]["seed"] == seed
        assert rec["name"] == f"tiny-msml/seed-{seed}"
    agg = json.loads((records / "tiny-msml.json").read_text())
    assert agg["n"] == 2 and agg["seeds"] == [3, 5] and agg["config"]["train"]["seeds"] == [3, 5]
    per = [json.loads((run / f"seed-{s}" / "metrics.json").read_text())["test"]["micro_f1"] for s in (3, 5)]
    assert agg["per_seed"]["micro_f1"] == per
    assert agg["metrics"]["micro_f1"] == pytest.approx(sum(per) / 2)
    assert json.loads((run / "seeds.json").read_text())["metrics"] == agg["metrics"]
    assert [s["seed"] for s in agg["seed_records"]] == [3, 5]
    # the seeds differ: different initialisations and batch orders
    assert _digest(run / "seed-3" / "best") != _digest(run / "seed-5" / "best")

    before = _digest(records)
    r = invoke("train", run_config, "--quiet", "--seeds", "3,5", "--set", "train.epochs=1", code=2)
    assert "record of this run exists" in r.output
    assert _digest(records) == before


def test_seeds_resume_reads_finished_seeds_back(run_config, tmp_path, invoke):
    cfg_seeds = ["--set", "train.epochs=2", "--set", "train.seeds=[3, 5]"]
    invoke("train", run_config, "--quiet", "--stop-after", "1", *cfg_seeds)
    run = tmp_path / "runs" / "tiny-msml"
    assert json.loads((run / "seed-3" / "last" / "train_state.json").read_text())["epoch"] == 1
    assert not (run / "seed-5").exists() and not (tmp_path / "records" / "tiny-msml.json").exists()
    invoke("train", run_config, "--quiet", "--resume", *cfg_seeds)
    seed3 = _digest(run / "seed-3")
    agg = json.loads((tmp_path / "records" / "tiny-msml.json").read_text())
    assert agg["n"] == 2 and agg["seed_records"][0]["epochs_run"] == 2
    # a resumed set whose seeds are all done only rewrites nothing it was not asked to
    r = invoke("train", run_config, "--quiet", "--resume", *cfg_seeds, code=2)
    assert "record of this run exists" in r.output
    assert _digest(run / "seed-3") == seed3


def test_eval_a_seeds_folder_with_another_decoding(run_config, tmp_path, invoke):
    invoke("train", run_config, "--quiet", "--seeds", "3,5", "--set", "train.epochs=1")
    run, records = tmp_path / "runs" / "tiny-msml", tmp_path / "records"
    before = _digest(records)
    invoke("eval", run, "--quiet", "--set", "decode.complete=true", "--set", "decode.method='top-down'",
           "--tag", "td")
    after = _digest(records)
    assert {k: v for k, v in after.items() if k in before} == before          # the run's own records untouched
    assert sorted(set(after) - set(before)) == ["tiny-msml.td.json", "tiny-msml/seed-3.td.json",
                                                 "tiny-msml/seed-5.td.json"]
    agg = json.loads((records / "tiny-msml.td.json").read_text())
    assert agg["n"] == 2 and agg["config"]["decode"]["method"] == "top-down"
    seed = json.loads((run / "seed-3" / "metrics.td.json").read_text())
    assert seed["decode"]["method"] == "top-down" and seed["decode"]["complete"] is True
    assert json.loads((run / "seeds.td.json").read_text())["per_seed"] == agg["per_seed"]
    assert json.loads((run / "seed-3" / "best" / "decode.json").read_text())["method"] == "best"
    r = invoke("eval", run, "--quiet", "--set", "decode.nope=1", "--tag", "x", code=2)
    assert "unknown key decode.nope" in r.output
    r = invoke("eval", run, "--quiet", "--set", "decode.threshold=abc", code=2)      # checked as --set of train is
    assert r.output.strip().splitlines() == ["error: decode.threshold: expected \"tune\" | float, got 'abc'"]
    r = invoke("eval", run, "--quiet", "--set", "train.lr=1", code=2)
    assert "only decode.* keys" in r.output


def test_resume_reads_a_recorded_seed_whose_folder_is_gone(run_config, tmp_path, invoke):
    import shutil
    cfg_seeds = ["--set", "train.epochs=1", "--set", "train.seeds=[3, 5]"]
    invoke("train", run_config, "--quiet", "--seeds", "3", "--set", "train.epochs=1")   # seed 3 alone: its record
    run, records = tmp_path / "runs" / "tiny-msml", tmp_path / "records"
    (records / "tiny-msml.json").unlink()                  # the one-seed mean record of that first call
    shutil.rmtree(run / "seed-3")                          # a new machine: the run folder is gone
    invoke("train", run_config, "--quiet", "--resume", *cfg_seeds)
    agg = json.loads((records / "tiny-msml.json").read_text())
    assert agg["seeds"] == [3, 5] and not (run / "seed-3").exists()


def test_command_line_records_python_m_as_the_console_command(monkeypatch):
    from hmtc.record import command_line
    monkeypatch.setattr(sys, "argv", ["/venv/lib/site-packages/hmtc/__main__.py", "train", "x y.toml", "-q"])
    assert command_line() == "hmtc train 'x y.toml' -q"
    monkeypatch.setattr(sys, "argv", ["/venv/bin/hmtc", "eval", "runs/a"])
    assert command_line() == "hmtc eval runs/a"


def test_mean_record_carries_the_dataset_protocol():
    recs = [{"seed": s, "dataset": "20newsgroups", "dataset_protocol": "remove=headers", "metrics": {"micro_f1": 0.5}}
            for s in (1, 2)]
    assert aggregate_records(recs)["dataset_protocol"] == "remove=headers"


def test_seeds_share_the_frozen_layer_cache_exactly(run_config, tmp_path, invoke):
    """The seeds of a cached set run each text through the frozen layers once; a seed that takes
    earlier seeds' states trains to the very weights and metrics it reaches alone."""
    cached = ["--set", "train.epochs=1", "--set", "model.freeze_layers=1", "--set", "train.cache_frozen=true"]
    invoke("train", run_config, "--quiet", "--seeds", "3,5", *cached)
    run = tmp_path / "runs" / "tiny-msml"
    states = {s: json.loads((run / f"seed-{s}" / "last" / "train_state.json").read_text()) for s in (3, 5)}
    assert "cache_reused" not in states[3] and states[5]["cache_reused"] > 0
    invoke("train", run_config, "--quiet", "--set", "train.seed=5", "--set", "name=alone", *cached)
    alone = tmp_path / "runs" / "alone"
    assert "cache_reused" not in json.loads((alone / "last" / "train_state.json").read_text())
    weights = [(d / "best" / "model.safetensors").read_bytes() for d in (run / "seed-5", alone)]
    assert weights[0] == weights[1]
    tests = [json.loads((d / "metrics.json").read_text())["test"] for d in (run / "seed-5", alone)]
    assert tests[0] == tests[1]


def test_frozen_fingerprint_keys_the_frozen_part(tiny_encoder):
    import torch
    from transformers import AutoModel

    from hmtc.inference import frozen_fingerprint
    from hmtc.models.encoder import TextEncoder, Windows

    def encoder(freeze: int = 1) -> TextEncoder:
        return TextEncoder(AutoModel.from_pretrained(tiny_encoder), freeze_layers=freeze)

    enc = encoder()
    key = frozen_fingerprint(enc, bf16=False)
    assert frozen_fingerprint(encoder(), bf16=False) == key
    assert frozen_fingerprint(enc, bf16=True) != key
    assert frozen_fingerprint(enc, bf16=False, windows=Windows(8, 0, 0)) != key
    assert frozen_fingerprint(enc, bf16=False, windows=Windows(8, 1, 0)) != frozen_fingerprint(
        enc, bf16=False, windows=Windows(8, 0, 0))
    assert frozen_fingerprint(encoder(2), bf16=False) != key
    # the frozen part's weights count; the trainable layer above it does not
    with torch.no_grad():
        enc.blocks()[1].output.dense.weight.add_(1.0)
    assert frozen_fingerprint(enc, bf16=False) == key
    with torch.no_grad():
        enc.blocks()[0].output.dense.weight.add_(1.0)
    assert frozen_fingerprint(enc, bf16=False) != key
