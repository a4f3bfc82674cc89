"""Baselines: global (recursive regularisation), local (LCPN path probabilities), tfidf."""

from __future__ import annotations

from dataclasses import replace
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from typer.testing import CliRunner

from hmtc.checkpoint import save_checkpoint
from hmtc.loading import load_checkpoint
from hmtc.cli import app
from hmtc.config import TextSpec, load_config
from hmtc.decode import closure, top_down
from hmtc.errors import ConfigError
from hmtc.models import make_config
from hmtc.models.global_ import GlobalModel
from hmtc.models.local import LocalModel
from hmtc.models.tfidf import CONSTANT, TfidfModel
from hmtc.taxonomy import Taxonomy
from hmtc.testing import tiny_tfidf_config_text
from hmtc.train import Trainer

from conftest import TAXONOMY

DAG = """ROOT
  a
    a1
    c
      c1
  b
    &c
    b1
"""


class StubEncoder(nn.Module):
    """Only what the heads read: the hidden size (tests call forward_states on random states)."""

    hidden_size = 4


def states(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, 4, generator=g), torch.ones(batch, 3, dtype=torch.long)


@pytest.mark.parametrize("name, options", [
    ("global", {"head": "mean", "dropout": 0.0, "recursive_reg": 1e-3}),
    ("local", {"head": "attention", "dropout": 0.0}),
])
def test_trains_lowers_the_loss_and_reloads(run_config, tmp_path, name, options):
    cfg = load_config(run_config, ["train.epochs=4", "train.record_dir=''", f"model.name={name}"])
    cfg = replace(cfg, model=replace(cfg.model, options=options))       # msml's options replaced, not merged into
    trainer = Trainer(cfg, tmp_path / name, quiet=True)
    trainer.fit()
    history = trainer.state_.history
    assert history[-1]["train_loss"] < 0.9 * history[0]["train_loss"]
    ckpt = load_checkpoint(tmp_path / name / "last")
    scores = ckpt.scores(trainer.data_.texts["test"])
    assert scores.shape == (32, 6) and np.isfinite(scores).all()


def test_recursive_regulariser_matches_a_hand_computation():
    tax = Taxonomy.parse(DAG)
    index = tax.compile()
    model = GlobalModel(StubEncoder(), index, make_config("global", {"recursive_reg": 0.3, "loss": "bce"}))
    with torch.no_grad():
        model.classifier.weight.copy_(torch.arange(index.n_nodes * 4, dtype=torch.float32).reshape(-1, 4).sin())
    w = model.classifier.weight.detach()
    edges = [(p, c) for p, c in tax.graph.edges if p != tax.root]
    assert len(edges) == 5                              # a-a1, a-c, b-c, b-b1, c-c1
    pos = index.id_to_index
    hand = 0.3 / 2 * sum(float(((w[pos[p]] - w[pos[c]]) ** 2).sum()) for p, c in edges)
    assert model.recursive_penalty().item() == pytest.approx(hand, rel=1e-6)
    h, mask = states(2)
    labels = torch.as_tensor(index.indicator([["a1"], ["c1"]]))
    out = model.forward_states(h, mask, labels)
    bce = F.binary_cross_entropy_with_logits(out.logits, labels.float())
    assert out.loss.item() == pytest.approx(bce.item() + hand, rel=1e-6)
    assert model.forward_states(h, mask).loss is None


def local_model(text: str, loss: str = "bce", seed: int = 0, scale: float = 1.0) -> LocalModel:
    torch.manual_seed(seed)
    model = LocalModel(StubEncoder(), Taxonomy.parse(text).compile(), make_config("local", {"loss": loss}))
    with torch.no_grad():
        for p in model.classifier.parameters():
            p.normal_(0.0, scale)
    return model.eval()


@pytest.mark.parametrize("build", ["local", "conditional msml"])
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), scale=st.floats(0.01, 200.0),
       threshold=st.floats(-30.0, 30.0), dag=st.booleans())
def test_path_logits_decode_top_down_consistently_by_construction(build, seed, scale, threshold, dag):
    """The local classifier's and conditional MSML's logits: p(c) <= p(parent) for any weights."""
    make = local_model if build == "local" else conditional_msml
    model = make(DAG if dag else TAXONOMY, seed=seed, scale=scale)
    index = Taxonomy.parse(DAG if dag else TAXONOMY).compile()
    with torch.no_grad():
        logits = model.forward_states(*states(16, seed)).logits.numpy()
    assert not np.isnan(logits).any()
    child = np.repeat(np.arange(index.n_nodes), index.n_parents)
    assert (logits[:, child] <= logits[:, index.parent_idx]).all()      # p(c) <= p(parent)
    raw = logits > threshold
    assert np.array_equal(top_down(logits, index, threshold), raw)      # nothing to cut
    assert np.array_equal(closure(logits, index, threshold), raw)       # nothing to add


def test_local_logits_are_path_probabilities():
    model = local_model(DAG, scale=0.5)
    index = Taxonomy.parse(DAG).compile()
    pos = index.id_to_index
    h, mask = states(8)
    with torch.no_grad():
        z = model.classifier(model.head(h, mask))
        p = torch.sigmoid(model.path_logits(z))
    edge = {(int(a), int(b)): e for e, (a, b) in enumerate(zip(model.edge_parent, model.edge_child))}
    root = index.n_nodes
    q = {n: torch.sigmoid(z[:, edge[(root, pos[n])]]) for n in ("a", "b")}
    q["a1"] = torch.sigmoid(z[:, edge[(pos["a"], pos["a1"])]]) * q["a"]
    q["c"] = torch.minimum(torch.sigmoid(z[:, edge[(pos["a"], pos["c"])]]) * q["a"],
                           torch.sigmoid(z[:, edge[(pos["b"], pos["c"])]]) * q["b"])   # DAG: min
    q["c1"] = torch.sigmoid(z[:, edge[(pos["c"], pos["c1"])]]) * q["c"]
    for n, expected in q.items():
        torch.testing.assert_close(p[:, pos[n]], expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("loss", ["bce", "zlpr"])
def test_local_loss_ignores_samples_whose_parent_is_absent(loss):
    model = local_model(TAXONOMY, loss=loss)
    tax = Taxonomy.parse(TAXONOMY)
    index = tax.compile()
    labels = torch.as_tensor(index.indicator([["animal-cat"], ["plant-rose", "plant-tree"]]))
    z = torch.randn(2, len(model.edge_child), requires_grad=True)
    parent = [index.ids[p] if p < index.n_nodes else tax.root for p in model.edge_parent.tolist()]
    gold = [set(index.labels_of(labels.numpy())[s]) | {tax.root} for s in range(2)]
    keep = torch.tensor([[p in gold[s] for p in parent] for s in range(2)])
    assert keep.sum() == 4 + 2 + 2         # root rows for both samples, then the gold parent's children
    model.local_loss(z, labels).backward()
    assert (z.grad[~keep] == 0).all() and (z.grad[keep] != 0).all()
    if loss == "bce":
        target = labels[:, model.edge_child].float()
        hand = F.binary_cross_entropy_with_logits(z[keep], target[keep])
        assert model.local_loss(z, labels).item() == pytest.approx(hand.item(), rel=1e-6)
    moved = z.detach() + 100.0 * ~keep        # scores of the ignored rows change nothing
    assert model.local_loss(moved, labels).item() == pytest.approx(model.local_loss(z, labels).item())


runner = CliRunner()


def invoke(*args):
    r = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r


@pytest.fixture
def tfidf_config(tmp_path, tiny_dataset):
    cfg = tmp_path / "tiny-tfidf.toml"
    cfg.write_text(tiny_tfidf_config_text(tiny_dataset, tmp_path), encoding="utf-8")
    return cfg


def test_tfidf_through_the_cli(tfidf_config, tmp_path):
    invoke("train", tfidf_config, "--quiet")
    run = tmp_path / "runs" / "tiny-tfidf"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["micro_f1"] > 0.9
    assert metrics["consistency"]["after"]["inconsistent_samples"] == 0
    record = json.loads((tmp_path / "records" / "tiny-tfidf.json").read_text())
    assert record["model"] == "tfidf" and record["epochs_run"] == 1 and record["train_seconds"] >= 0
    assert record["history"][0]["dev_micro_f1"] > 0.9
    files = {p.name for p in (run / "last").iterdir()}
    assert files == {"tfidf.safetensors", "vocabulary.json", "tfidf.json", "taxonomy.tax", "labels.json", "manifest.json",
                     "checkpoint.json", "train_state.json"}

    r = invoke("eval", run, "--json", "--quiet", "--overwrite")
    assert json.loads(r.stdout)["test"]["micro_f1"] == pytest.approx(metrics["test"]["micro_f1"])
    r = invoke("predict", run, "meow kitten here", "oak leaf today")
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert rows[0]["labels"] == ["animal", "animal-cat"]
    assert rows[1]["labels"] == ["plant", "plant-tree"]


def test_tfidf_checkpoint_reloads_to_identical_scores(tfidf_config, tmp_path):
    from hmtc.data.prepare import prepare, taxonomy_for
    cfg = load_config(tfidf_config)
    data = prepare(cfg, taxonomy_for(cfg))
    y = data.labels["train"].copy()
    y[:, data.index.id_to_index["plant-rose"]] = False      # a node without positives
    model = TfidfModel.create(cfg.model, TextSpec.of(cfg), data.index).fit(data.texts["train"], y)
    before = model.scores(data.texts["test"])
    save_checkpoint(tmp_path / "ckpt", model, data.taxonomy, cfg)
    ckpt = load_checkpoint(tmp_path / "ckpt")
    assert isinstance(ckpt.model, TfidfModel) and ckpt.model is not model
    after = ckpt.scores(data.texts["test"])
    assert after.dtype == np.float32 and np.array_equal(after, before)
    assert (after[:, data.index.id_to_index["plant-rose"]] == -CONSTANT).all()
    with pytest.raises(ConfigError, match="tfidf classifier"):
        make_config("tfidf", {"classifier": "forest"})


def test_tfidf_leaves_only_scores_parents_by_their_best_child(tfidf_config, tmp_path):
    from hmtc.data.prepare import prepare, taxonomy_for
    cfg = load_config(tfidf_config)
    data = prepare(cfg, taxonomy_for(cfg))
    index = data.index
    cfg = replace(cfg, model=replace(cfg.model, options={"targets": "leaves"}))
    model = TfidfModel.create(cfg.model, TextSpec.of(cfg), index).fit(data.texts["train"], data.labels["train"])
    s = model.scores(data.texts["test"])
    for node in ("animal", "plant"):
        kids = [index.id_to_index[c] for c in data.taxonomy.children(node)]
        assert np.array_equal(s[:, index.id_to_index[node]], s[:, kids].max(1))
    save_checkpoint(tmp_path / "ckpt", model, data.taxonomy, cfg)
    assert np.array_equal(load_checkpoint(tmp_path / "ckpt").scores(data.texts["test"]), s)
    with pytest.raises(ConfigError, match="tfidf targets"):
        make_config("tfidf", {"targets": "roots"})


def conditional_msml(text: str, seed: int = 0, scale: float = 1.0):
    from hmtc.models.msml import MSMLModel
    torch.manual_seed(seed)
    model = MSMLModel(StubEncoder(), Taxonomy.parse(text).compile(),
                      make_config("msml", {"filters": 2, "tower_dim": 4, "dropout": 0.0, "conditional": True,
                                           "loss": "bce"})).eval()
    with torch.no_grad():
        for clf in model.classifiers:
            clf.weight.mul_(scale)
            clf.bias.normal_(0, scale)
    return model


def test_conditional_msml_trains_a_dag_node_where_all_its_parents_are_gold():
    model = conditional_msml(DAG)
    index = Taxonomy.parse(DAG).compile()
    pos = index.id_to_index
    labels = torch.as_tensor(index.indicator([["a"], ["a", "b"], ["a", "b", "c"], ["b", "b1"], []]),
                             dtype=torch.float32)
    mask = model.parent_positive(labels)
    assert mask[:, pos["c"]].tolist() == [False, True, True, False, False]
    assert mask[:, pos["a1"]].tolist() == [True, True, True, False, False]
    assert mask[:, pos["c1"]].tolist() == [False, False, True, False, False]
    assert mask[:, pos["a"]].all() and mask[:, pos["b"]].all()


def test_a_baseline_fitted_beside_a_run(run_config, tmp_path, tiny_dataset, invoke):
    import json

    from hmtc.testing import tiny_tfidf_config_text
    base = tmp_path / "base.toml"
    base.write_text(tiny_tfidf_config_text(tiny_dataset, tmp_path / "elsewhere"), encoding="utf-8")
    r = invoke("train", run_config, "--quiet", "--set", "train.epochs=1", "--set", "train.baseline=/nowhere.toml",
               code=2)
    assert "train.baseline: no config file at /nowhere.toml" in r.output
    assert not (tmp_path / "runs" / "tiny-msml" / "best").exists()                 # refused before training
    r = invoke("train", run_config, "--quiet", "--set", "train.epochs=1", "--set", f"train.baseline={base}")
    assert "this run beside the baseline" in r.output and "tfidf" in r.output
    assert "this run is " in r.output and "the baseline at leaf micro" in r.output
    run = tmp_path / "runs" / "tiny-msml"
    metrics = json.loads((run / "metrics.json").read_text())
    b = metrics["baseline"]
    assert b["model"] == "tfidf" and b["config"] == str(base) and 0 <= b["test"]["leaf_micro_f1"] <= 1
    bm = json.loads((run / "baseline" / "metrics.json").read_text())
    assert bm["test"]["leaf_micro_f1"] == b["test"]["leaf_micro_f1"]
    # the same split: the baseline read the run's [data] and seed
    assert json.loads((run / "baseline" / "config.json").read_text())["data"] == \
        json.loads((run / "config.json").read_text())["data"]
    assert not (tmp_path / "elsewhere").exists()                                   # no record, no folder of its own
