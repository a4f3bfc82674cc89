"""Zero- and few-shot scoring from the taxonomy's names (hmtc.models.zeroshot), on the tiny encoder."""

from __future__ import annotations

from dataclasses import replace
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hmtc.loading import load_checkpoint
from hmtc.config import RunConfig, load_config
from hmtc.data.prepare import prepare, taxonomy_for
from hmtc.errors import ConfigError
from hmtc.models import create_model
from hmtc.models.zeroshot import node_passages
from hmtc.train import Trainer


@pytest.fixture
def zs_config(run_config):
    return load_config(run_config, ["model.name=zeroshot", "model.layers=[-1]", "train.record_dir=''"])


def _zs(cfg: RunConfig, **options) -> RunConfig:
    return replace(cfg, model=replace(cfg.model, options={"query_prefix": "", "passage_prefix": "", **options}))


def by_hand(model, texts: list[str]) -> torch.Tensor:
    """Mean-pooled unit embeddings computed directly from the backbone."""
    enc = model.tokenizer(texts, padding=True, truncation=True, max_length=model.max_length, return_tensors="pt")
    with torch.no_grad():
        h = model.encoder.backbone(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()
    return F.normalize((h * m).sum(1) / m.sum(1), dim=-1)


def test_scores_equal_a_cosine_by_hand(zs_config):
    cfg = _zs(zs_config, examples=0.0, scale=10.0, margin=0.5, parents="own", label_text="path")
    tax = taxonomy_for(cfg)
    index = tax.compile()
    model = create_model(cfg, index).fit([], np.zeros((0, index.n_nodes), bool))
    passages = node_passages(index, model.config)
    assert passages[index.id_to_index["animal-cat"]] == "animal / cat"       # label_text = "path"
    texts = ["meow kitten here", "oak leaf today", "the big dog"]
    cos = by_hand(model, texts) @ by_hand(model, passages).T
    want = torch.empty_like(cos)
    for sl in index.level_slices:
        want[:, sl] = 10.0 * (cos[:, sl] - cos[:, sl].max(1, keepdim=True).values) + 0.5
    got = model.scores(texts)
    np.testing.assert_allclose(got, want.numpy(), atol=1e-4)
    for sl in index.level_slices:        # each level's best node scores the margin
        np.testing.assert_allclose(got[:, sl].max(1), 0.5, atol=1e-6)


def test_parents_score_their_best_leaf(zs_config):
    cfg = _zs(zs_config, examples=0.0, scale=10.0, margin=0.5)
    index = taxonomy_for(cfg).compile()
    model = create_model(cfg, index).fit([], np.zeros((0, index.n_nodes), bool))
    assert node_passages(index, model.config)[index.id_to_index["animal-cat"]] == "cat"
    texts = ["meow kitten here", "oak leaf today"]
    cos = by_hand(model, texts) @ by_hand(model, node_passages(index, model.config)).T
    leaf = torch.as_tensor(index.leaf_mask)
    want = 10.0 * (cos - cos[:, leaf].max(1, keepdim=True).values) + 0.5
    got = model.scores(texts)
    np.testing.assert_allclose(got[:, index.leaf_mask], want[:, leaf].numpy(), atol=1e-4)
    for parent in ("animal", "plant"):
        kids = [index.id_to_index[c] for c in index.ids if c.startswith(parent + "-")]
        np.testing.assert_allclose(got[:, index.id_to_index[parent]], got[:, kids].max(1), atol=1e-6)
    assert np.allclose(got.max(1), 0.5)


def test_prototypes_mix_names_and_examples(zs_config):
    cfg = _zs(zs_config, examples=0.25)
    index = taxonomy_for(cfg).compile()
    model = create_model(cfg, index)
    texts = ["meow kitten", "cat meow", "oak tree"]
    y = index.indicator([["animal-cat"], ["animal-cat"], ["plant-tree"]])
    model.fit(texts, y)
    names = by_hand(model, node_passages(index, model.config))
    ex = by_hand(model, texts)
    cat, animal, dog = (index.id_to_index[n] for n in ("animal-cat", "animal", "animal-dog"))
    want_cat = F.normalize(0.75 * names[cat] + 0.25 * F.normalize(ex[0] + ex[1], dim=0), dim=0)
    want_animal = F.normalize(0.75 * names[animal] + 0.25 * F.normalize(ex[0] + ex[1], dim=0), dim=0)
    torch.testing.assert_close(model.prototypes[cat], want_cat, atol=1e-5, rtol=0)
    torch.testing.assert_close(model.prototypes[animal], want_animal, atol=1e-5, rtol=0)   # a parent pools its children
    torch.testing.assert_close(model.prototypes[dog], names[dog], atol=1e-5, rtol=0)        # no example: its name


def test_descriptions_join_the_passages(zs_config, tmp_path):
    tax_text = (tmp_path / "d.tax")
    tax = taxonomy_for(zs_config).rename("animal-cat", description="a small feline that meows")
    tax.save(tax_text)
    index = tax.compile()
    cfg = _zs(zs_config)
    assert node_passages(index, create_model(cfg, index).config)[index.id_to_index["animal-cat"]] == \
        "cat: a small feline that meows"


def test_zero_shots_train_in_one_pass_evaluate_and_reload(zs_config, tmp_path):
    cfg = _zs(zs_config).merged({"data": {"shots": 0}})
    trainer = Trainer(cfg, tmp_path / "zs", quiet=True)
    run = trainer.fit()
    from hmtc.evaluate import evaluate_run
    metrics = evaluate_run(run, quiet=True)
    assert metrics["dev"] is None and metrics["decode"]["threshold"] == 0.0
    assert metrics["sampling"]["train_texts"] == 0 and metrics["consistency"]["after"]["inconsistent_samples"] == 0
    ckpt = load_checkpoint(run / "best")
    again = ckpt.scores(["meow kitten here"])
    np.testing.assert_array_equal(again, trainer_scores := create_model(cfg, taxonomy_for(cfg).compile())
                                  .fit([], np.zeros((0, 6), bool)).scores(["meow kitten here"]))
    assert trainer_scores.shape == (1, 6)


def test_few_shots_with_dev_tune_a_threshold(zs_config, tmp_path):
    cfg = _zs(zs_config).merged({"data": {"shots": 4}})
    run = Trainer(cfg, tmp_path / "fs", quiet=True).fit()
    from hmtc.evaluate import evaluate_run
    metrics = evaluate_run(run, quiet=True)
    assert metrics["sampling"]["shots"] == 4 and metrics["dev"] is not None
    state = json.loads((run / "last" / "train_state.json").read_text())
    assert "dev_micro_f1" in state["history"][0]


def test_models_that_need_examples_refuse_zero_shots(run_config, tmp_path):
    cfg = load_config(run_config, ["data.shots=0", "train.record_dir=''"])
    with pytest.raises(ConfigError, match="zeroshot"):
        Trainer(cfg, tmp_path / "msml0", quiet=True).fit()


@pytest.mark.parametrize("options, words", [({"label_text": "id"}, "label_text"), ({"examples": 2.0}, "examples"),
                                            ({"scale": 0.0}, "scale"), ({"parents": "max"}, "parents"),
                                            ({"bogus": 1}, "unknown option")])
def test_bad_options_are_clear(zs_config, options, words):
    cfg = _zs(zs_config, **options)
    with pytest.raises(ConfigError, match=words):
        create_model(cfg, taxonomy_for(cfg).compile())


def test_proto_starts_from_the_zero_shot_prototypes_and_learns(zs_config, tmp_path):
    cfg = _zs(zs_config, examples=0.5).merged({"model": {"name": "proto"}, "data": {"shots": 6}, "train": {"epochs": 3}})
    trainer = Trainer(cfg, tmp_path / "proto", quiet=True)
    index = taxonomy_for(cfg).compile()
    start = create_model(cfg.merged({"model": {"name": "zeroshot"}}), index)
    data = prepare(cfg, taxonomy_for(cfg))
    start.fit(data.texts["train"], data.labels["train"])
    run = trainer.fit()
    state = json.loads((run / "last" / "train_state.json").read_text())
    assert len(state["history"]) == 3 and all(np.isfinite(h["train_loss"]) for h in state["history"])
    trained = load_checkpoint(run / "last").model
    assert not torch.allclose(trained.prototypes, start.prototypes)      # it learned from there
    assert trained.text_prefix == "" and trainer.data_.sampling["shots"] == 6
    # the loss: multi-positive softmax over the leaves at temperature 1/scale
    states = torch.randn(2, 5, 32)
    mask = torch.ones(2, 5, dtype=torch.long)
    y = torch.as_tensor(index.indicator([["animal-cat"], ["animal-dog", "plant-rose"]]), dtype=torch.float32)
    out = trained.forward_states(states, mask, y)
    from hmtc.models.zeroshot import pool
    cos = pool(states, mask) @ F.normalize(trained.prototypes, dim=1).T
    z = trained.config.scale * cos[:, index.leaf_mask]
    leaf_y = y[:, index.leaf_mask].bool()
    want = torch.stack([torch.logsumexp(z[i], 0) - z[i][leaf_y[i]].mean() for i in range(2)]).mean()
    torch.testing.assert_close(out.loss, want, atol=1e-4, rtol=1e-5)
