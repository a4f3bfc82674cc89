"""MSML's ablation options: what each one removes from the model."""

from __future__ import annotations

from dataclasses import replace
import pytest
import torch

from hmtc.config import load_config
from hmtc.taxonomy import Taxonomy
from hmtc.data.prepare import taxonomy_for
from hmtc.models import create_model


def _model(run_config, **options):
    sets = [f"model.options.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in options.items()]
    cfg = load_config(run_config, sets)
    torch.manual_seed(0)
    taxonomy: Taxonomy = taxonomy_for(cfg)
    model = create_model(cfg, taxonomy.compile())
    tok = model.tokenizer
    batch = tok(["cat meow here", "oak leaf tree today"], padding=True, return_tensors="pt")
    return model.eval(), batch["input_ids"], batch["attention_mask"]


def _level2_after(model, ids, mask, module):
    with torch.no_grad():
        before = model(ids, mask).logits[:, model.slices[1]].clone()
        for p in module.parameters():
            p.add_(torch.randn_like(p))
        return before, model(ids, mask).logits[:, model.slices[1]]


def test_gates_pass_level_one_down_and_ablating_them_cuts_it(run_config):
    model, ids, mask = _model(run_config)
    before, after = _level2_after(model, ids, mask, model.classifiers[0])
    assert not torch.allclose(before, after)              # level 1's labels feed level 2's gate
    model, ids, mask = _model(run_config, gates=False)
    assert model.gates is None
    before, after = _level2_after(model, ids, mask, model.towers[0])
    assert torch.equal(before, after)                     # level 2 reads its own tower only


def test_no_label_feedback_ignores_level_one_predictions(run_config):
    model, ids, mask = _model(run_config, label_feedback=False)
    assert all(g.feedback is None for g in model.gates)
    before, after = _level2_after(model, ids, mask, model.classifiers[0])
    assert torch.equal(before, after)                     # only level 1's state passes down


def test_shared_tower_and_one_kernel(run_config):
    model, ids, mask = _model(run_config, shared_tower=True)
    assert len(model.towers) == 1
    assert [c.kernel_size[0] for c in model.towers[0].convs] == [3, 5, 7]
    model, ids, mask = _model(run_config, kernels="[[3],[3]]")
    assert [[c.kernel_size[0] for c in t.convs] for t in model.towers] == [[3], [3]]
    out = model(ids, mask, labels=torch.zeros(2, model.slices[-1].stop))
    assert out.logits.shape == (2, 6) and out.loss.ndim == 0


@pytest.mark.parametrize("options", [{}, {"gates": False}, {"shared_tower": True}])
def test_ablations_train(run_config, tmp_path, options):
    from hmtc.train import Trainer
    sets = ["train.epochs=1", "train.record_dir=''"] + [f"model.options.{k}={str(v).lower()}" for k, v in options.items()]
    t = Trainer(load_config(run_config, sets), tmp_path / "r", quiet=True)
    t.fit()
    assert t.state_.step > 0 and all(torch.isfinite(torch.tensor(h["train_loss"])) for h in t.state_.history)


def test_constrained_msml_outputs_parents_above_children_and_trains(run_config, tmp_path):
    from hmtc.train import Trainer
    model, ids, mask = _model(run_config, constrained=True)
    z = model(ids, mask).logits
    par = model.under.numpy()
    for i in range(z.shape[1]):
        assert torch.all(z[:, i:i + 1] >= z[:, torch.as_tensor(par[i])])
    t = Trainer(load_config(run_config, ["train.epochs=2", "train.record_dir=''", "model.options.constrained=true"]),
                tmp_path / "r", quiet=True)
    t.fit()
    assert t.state_.history[-1]["train_loss"] < t.state_.history[0]["train_loss"]


def test_level_weights_must_cover_every_level(run_config):
    from hmtc.errors import ConfigError
    with pytest.raises(ConfigError, match="1 weights for 2 levels"):
        _model(run_config, level_weights="[1.0]")


@pytest.mark.parametrize("model_name, mode", [("msml", "name"), ("msml", "path"), ("flat", "name")])
def test_label_init_sets_each_row_from_its_label_text(run_config, model_name, mode):
    from hmtc.models.label_init import label_texts
    cfg = load_config(run_config, [f"model.name='{model_name}'", f"model.options.label_init='{mode}'"])
    if model_name == "flat":
        cfg = replace(cfg, model=replace(cfg.model, options={"head": "mean", "label_init": mode}))
    taxonomy = taxonomy_for(cfg)
    index = taxonomy.compile()
    texts = label_texts(index, mode)
    assert texts[index.id_to_index["animal-cat"]] == ("cat" if mode == "name" else "animal / cat")
    torch.manual_seed(0)
    model = create_model(cfg, index)
    tok = model.tokenizer
    model.eval()
    enc = tok(texts, padding=True, return_tensors="pt")
    for linear, feats in model.label_features(enc["input_ids"], enc["attention_mask"]):
        centred = feats - feats.mean(0)
        named = centred.norm(dim=1) > 1e-5      # level 1's ids are unknown words here: equal texts
        cos = torch.nn.functional.cosine_similarity(linear.weight[named], centred[named], dim=1)
        assert torch.allclose(cos, torch.ones_like(cos), atol=1e-4)          # row i points at label i's text
        assert torch.all(linear.bias == 0) and torch.all(linear.weight[~named] == 0)
    assert named.sum() == 4


def test_label_init_off_leaves_the_default_rows(run_config):
    torch.manual_seed(0)
    plain, _, _ = _model(run_config)
    model, _, _ = _model(run_config, label_init="name")
    assert not torch.equal(plain.classifiers[0].weight, model.classifiers[0].weight)
    assert torch.equal(plain.towers[0].proj.weight, model.towers[0].proj.weight)   # only the rows change
    with pytest.raises(Exception, match="model.options.label_init: expected one of '', 'name', 'path', got 'names'"):
        _model(run_config, label_init="names")


def test_conditional_msml_scores_paths_and_masks_the_loss_by_parent(run_config, tmp_path):
    """conditional = true: logit(child) <= logit(parent) for any weights; the loss is the
    parent-masked per-level loss of the raw logits; the output is σ(z_c)·p(parent) in a tree."""
    import torch.nn.functional as F

    from hmtc.train import Trainer
    model, ids, mask = _model(run_config, conditional=True, loss="bce")
    parent = model.parent_pad[:, 0]
    for scale in (0.0, 1.0, 30.0):         # also saturated scores, where p rounds to 1 or 0
        with torch.no_grad():
            for clf in model.classifiers:
                clf.weight.normal_(0, scale if scale else 1.0)
                clf.bias.fill_(scale)
        out = model(ids, mask).logits
        level2 = torch.arange(model.slices[1].start, model.slices[1].stop)
        assert torch.all(out[:, level2] <= out[:, parent[level2]])
    with torch.no_grad():
        for clf in model.classifiers:
            clf.weight.normal_(0, 0.5)
            clf.bias.normal_(0, 0.5)
        states, m = model.encode(ids, mask)
        z = torch.cat([zl for _, zl in model.level_states(states, m)], -1).float()
        p = torch.sigmoid(z)
        path = p.clone()
        path[:, level2] = p[:, level2] * p[:, parent[level2]]
        assert torch.allclose(torch.sigmoid(model(ids, mask).logits), path, atol=1e-6)
        # labels: text 0 in "animal" (with a child), text 1 in nothing: its level-2 terms drop out
        n = model.slices[-1].stop
        labels = torch.zeros(2, n)
        labels[0, parent[level2[0]]] = 1.0
        labels[0, level2[0]] = 1.0
        keep = (labels[:, parent[level2]] > 0)
        bce = F.binary_cross_entropy_with_logits(z, labels, reduction="none")
        want = bce[:, model.slices[0]].mean() + bce[:, level2][keep].mean()
        assert model(ids, mask, labels=labels).loss.item() == pytest.approx(want.item(), rel=1e-5)
    with pytest.raises(Exception, match="choose one"):
        _model(run_config, conditional=True, constrained=True)
    with pytest.raises(Exception, match="loss = \"bce\""):
        _model(run_config, conditional=True)
    t = Trainer(load_config(run_config, ["train.epochs=2", "train.record_dir=''", "model.options.conditional=true",
                                         "model.options.loss='bce'"]), tmp_path / "r", quiet=True)
    t.fit()
    assert t.state_.history[-1]["train_loss"] < t.state_.history[0]["train_loss"]
