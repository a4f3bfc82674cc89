"""The modelling toolbox, each piece switched on by configuration alone: pooling heads (with
label tokens), losses (focal, logit-adjusted), step regularisers (FGM, gradient penalty, R-Drop)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from hmtc.loading import load_checkpoint
from hmtc.config import load_config
from hmtc.errors import ConfigError, HmtcError
from hmtc.losses import LOSSES, build_loss, fit_losses
from hmtc.models import ModelOutput
from hmtc.regularizers import backward_step, rdrop_loss, symmetric_kl
from hmtc.data.prepare import taxonomy_for
from hmtc.models import create_model
from hmtc.train import Trainer


@pytest.fixture
def flat_config(tmp_path, run_config):
    """The tiny run config with the flat model (its own options replace the MSML ones)."""
    text = run_config.read_text().replace('name = "msml"', 'name = "flat"').replace(
        "options = { filters = 16, tower_dim = 32, dropout = 0.0 }", 'options = { head = "mean", dropout = 0.0 }')
    path = tmp_path / "tiny-flat.toml"
    path.write_text(text, encoding="utf-8")
    return path


def train_losses(config, tmp_path, overrides: list[str], epochs: int = 4) -> list[float]:
    """Train the configured run for a few tiny epochs; the mean train loss of each."""
    cfg = load_config(config, [f"train.epochs={epochs}", "train.record_dir=''", *overrides])
    trainer = Trainer(cfg, tmp_path / "run", quiet=True)
    trainer.fit()
    return [h["train_loss"] for h in trainer.state_.history]


# ---------------------------------------------------------------------------- heads

@pytest.mark.parametrize("head", ["cls", "mean", "attention", "bilstm", "textcnn", "label_token"])
def test_each_head_trains_the_flat_model(flat_config, tmp_path, head):
    losses = train_losses(flat_config, tmp_path, [f"model.options.head={head}"])
    assert losses[-1] < 0.95 * losses[0], losses


def test_label_tokens_do_not_depend_on_padding(flat_config):
    cfg = load_config(flat_config, ["model.options.head=label_token"])
    model = create_model(cfg, taxonomy_for(cfg).compile())
    tok = model.tokenizer
    model.eval()
    ids = [tok("meow cat")["input_ids"], tok("oak leaf tree is very big here today")["input_ids"]]
    together = model.score_ids(ids)
    alone = model.score_ids(ids[:1])
    assert together.shape == (2, 6)
    np.testing.assert_allclose(together[:1], alone, atol=1e-5)
    assert len(model.label_tokens.embed.weight) == 4                  # one token per leaf


# ---------------------------------------------------------------------------- losses

Z = [[2.0, -1.0, 0.0], [0.5, -2.0, 1.0]]
Y = [[1, 0, 0], [0, 0, 1]]
Y_TRAIN = np.array([[1, 0, 0], [1, 0, 1], [0, 0, 1], [1, 0, 0]], dtype=bool)   # counts 3, 0, 2 of 4


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def hand_bce(offsets=(0.0, 0.0, 0.0)) -> float:
    terms = [-math.log(sig(z + o)) if y else -math.log(1 - sig(z + o))
             for zr, yr in zip(Z, Y) for z, y, o in zip(zr, yr, offsets)]
    return sum(terms) / 6


def hand_zlpr() -> float:
    return sum(math.log(1 + sum(math.exp(z) for z, y in zip(zr, yr) if not y))
               + math.log(1 + sum(math.exp(-z) for z, y in zip(zr, yr) if y)) for zr, yr in zip(Z, Y)) / 2


def focal_terms(gamma: float, alpha: float) -> list[float]:
    terms = []
    for zr, yr in zip(Z, Y):
        for z, y in zip(zr, yr):
            p_t = sig(z) if y else 1 - sig(z)
            a_t = alpha if y else 1 - alpha
            terms.append(-a_t * (1 - p_t) ** gamma * math.log(p_t))
    return terms


def hand_focal(gamma: float, alpha: float) -> float:
    return sum(focal_terms(gamma, alpha)) / 6


def hand_logit_adjusted(tau: float) -> float:
    priors = [(3 + 1) / 6, (0 + 1) / 6, (2 + 1) / 6]            # Laplace-smoothed over 4 samples
    return hand_bce([tau * math.log(p / (1 - p)) for p in priors])


@pytest.mark.parametrize("name, options, expected", [
    ("bce", {}, hand_bce()),
    ("zlpr", {}, hand_zlpr()),
    ("focal", {}, hand_focal(2.0, 0.25)),
    ("focal", {"gamma": 1.0, "alpha": 0.5}, hand_focal(1.0, 0.5)),
    ("logit_adjusted", {}, hand_logit_adjusted(1.0)),
    ("logit_adjusted", {"tau": 0.5}, hand_logit_adjusted(0.5)),
])
def test_loss_matches_hand_computed_values(name, options, expected):
    z, y = torch.tensor(Z), torch.tensor(Y, dtype=torch.float32)
    loss = build_loss(name, options, y_train=Y_TRAIN if name == "logit_adjusted" else None)
    assert loss(z, y).item() == pytest.approx(expected, rel=1e-5)
    if name != "logit_adjusted":                          # plain function entries still work
        assert LOSSES.get(name)(z, y, **options).item() == pytest.approx(expected, rel=1e-5)


def test_loss_options_and_fitting():
    z, y = torch.tensor(Z), torch.tensor(Y, dtype=torch.float32)
    with pytest.raises(ConfigError, match="gamma"):
        build_loss("bce", {"gamma": 2})
    with pytest.raises(ConfigError, match="unknown loss"):
        build_loss("hinge")
    la = build_loss("logit_adjusted", columns=[2, 0, 1])
    with pytest.raises(HmtcError, match="priors"):
        la(z, y)
    model = nn.ModuleList([la])
    fit_losses(model, Y_TRAIN[:, [1, 2, 0]])             # the loss reads its own columns
    assert la(z, y).item() == pytest.approx(hand_logit_adjusted(1.0), rel=1e-5)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])           # masked entries leave the mean
    terms = focal_terms(2.0, 0.25)
    assert build_loss("focal")(z, y, mask).item() == pytest.approx((sum(terms) - terms[2]) / 5, rel=1e-5)


@pytest.mark.parametrize("model, overrides", [
    ("flat", ["model.options.loss=bce"]),
    ("flat", ["model.options.loss=zlpr"]),
    ("flat", ["model.options.loss=focal", "model.options.loss_options={gamma = 1.0, alpha = 0.5}"]),
    ("flat", ["model.options.loss=logit_adjusted"]),
    ("msml", ["model.options.loss=focal"]),
    ("msml", ["model.options.loss=logit_adjusted", "model.options.loss_options={tau = 0.5}"]),
])
def test_each_loss_trains_a_model(model, overrides, run_config, flat_config, tmp_path):
    losses = train_losses(flat_config if model == "flat" else run_config, tmp_path, overrides)
    assert losses[-1] < 0.95 * losses[0], losses
    ckpt = load_checkpoint(tmp_path / "run" / "last")     # rebuilt without the priors: unused at inference
    assert ckpt.model.score_ids([[2, 6, 3]]).shape == (1, 6)


# ---------------------------------------------------------------------------- regularisers
# The tiny BERT's word embeddings are short (norm ≈ 0.1 per token, 1.6 in me5-small), so its
# FGM step and penalty weight are scaled down to perturb a comparable fraction of them.
FGM, GP = "train.fgm_epsilon=0.05", "train.gp_weight=1e-3"


@pytest.mark.parametrize("model, overrides", [
    ("msml", [FGM, "model.freeze_embeddings=true"]),
    ("msml", [GP]),
    ("msml", ["train.rdrop_alpha=1.0"]),
    ("msml", [FGM, GP, "train.rdrop_alpha=1.0", "train.bf16=true"]),
    ("flat", ["model.options.head=label_token", "model.freeze_embeddings=true", FGM, GP, "train.rdrop_alpha=1.0"]),
], ids=["fgm-frozen", "gp", "rdrop", "all-bf16", "all-label-token"])
def test_each_regularizer_trains(model, overrides, run_config, flat_config, tmp_path):
    losses = train_losses(flat_config if model == "flat" else run_config, tmp_path, overrides)
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.95 * losses[0], losses


class Toy(nn.Module):
    """Embeddings -> tanh -> mean -> linear: smooth, so finite differences can be checked."""

    def __init__(self, frozen: bool):
        super().__init__()
        torch.manual_seed(0)
        self.emb, self.out = nn.Embedding(12, 5), nn.Linear(5, 3)
        self.double().emb.weight.requires_grad_(not frozen)
        self.ids = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 0], [8, 9, 10, 11]])
        self.y = torch.tensor([[1.0, 0, 0], [0, 1, 1], [0, 0, 1]], dtype=torch.float64)

    def loss(self, e=None) -> torch.Tensor:
        e = self.emb(self.ids) if e is None else e
        return LOSSES.get("bce")(self.out(torch.tanh(e).mean(1)), self.y)

    def grads(self) -> list[torch.Tensor]:
        grads = [p.grad.clone() for p in self.parameters() if p.requires_grad]
        self.zero_grad(set_to_none=True)
        return grads


@pytest.mark.parametrize("frozen", [False, True])
def test_gradient_penalty_matches_double_backward(frozen):
    toy, lam = Toy(frozen), 1e-2
    backward_step(toy.loss, toy.emb, gp_weight=lam)
    approx = toy.grads()
    e = toy.emb(toy.ids)
    e = e if e.requires_grad else e.detach().requires_grad_()
    loss = toy.loss(e)
    (g,) = torch.autograd.grad(loss, e, create_graph=True)
    (loss + lam * len(e) * g.pow(2).sum()).backward()     # λ · mean_b ||∇_{e_b} ℓ_b||², exactly
    exact = toy.grads()
    toy.loss().backward()
    plain = toy.grads()
    for a, x, p in zip(approx, exact, plain):            # the penalty's part of the gradient, FD vs exact
        assert (a - x).norm() < 1e-2 * (x - p).norm()
    assert not toy.emb._forward_hooks                     # the hook is gone


@pytest.mark.parametrize("frozen", [False, True])
def test_fgm_adds_the_gradient_at_a_per_text_step(frozen):
    toy, eps = Toy(frozen), 0.5
    backward_step(toy.loss, toy.emb, fgm_epsilon=eps)
    got = toy.grads()
    e = toy.emb(toy.ids).detach().requires_grad_()
    (g,) = torch.autograd.grad(toy.loss(e), e)
    r = eps * g / g.flatten(1).norm(dim=1)[:, None, None]
    toy.loss().backward()
    toy.loss(toy.emb(toy.ids) + r).backward()
    for a, x in zip(got, toy.grads()):
        torch.testing.assert_close(a, x)
    assert not toy.emb._forward_hooks


@pytest.mark.parametrize("kind", ["fgm_epsilon", "gp_weight"])
def test_an_encoder_run_in_parts_gets_the_steps_of_one_run(kind):
    """Windows run the embeddings twice a pass (full and short windows): each part gets its rows'
    own step, as if the batch had run at once."""
    toy = Toy(frozen=False)

    def in_parts():
        return toy.loss(torch.cat([toy.emb(toy.ids[:1]), toy.emb(toy.ids[1:])]))

    backward_step(toy.loss, toy.emb, **{kind: 0.3})
    once = toy.grads()
    backward_step(in_parts, toy.emb, **{kind: 0.3})
    for a, b in zip(once, toy.grads()):
        torch.testing.assert_close(a, b)
    assert not toy.emb._forward_hooks


def test_fgm_on_cached_states_perturbs_a_copy():
    toy, eps = Toy(frozen=True), 0.5
    cache = toy.emb(toy.ids).detach()
    kept = cache.clone()
    plain = toy.loss(cache).item()
    loss = backward_step(toy.loss, None, fgm_epsilon=eps, states=cache)
    got = toy.grads()
    assert loss.item() == pytest.approx(plain)            # the returned loss is the clean pass's
    assert torch.equal(cache, kept) and not cache.requires_grad     # the cache itself is untouched
    e = cache.clone().requires_grad_()
    (g,) = torch.autograd.grad(toy.loss(e), e)
    r = eps * g / g.flatten(1).norm(dim=1)[:, None, None]
    assert toy.loss(cache + r).item() > plain             # the adversarial step raises the loss
    toy.loss(cache).backward()
    clean = toy.grads()
    toy.loss(cache).backward()
    toy.loss(cache + r).backward()
    for a, x, c in zip(got, toy.grads(), clean):
        torch.testing.assert_close(a, x)                  # ∇θ L(e) + ∇θ L(e + r)
        assert not torch.allclose(a, c)


def test_cached_run_with_fgm_trains_differently(run_config, tmp_path):
    base = ["train.epochs=1", "train.record_dir=''", "model.freeze_layers=1", "train.cache_frozen=true"]
    runs = {}
    for name, extra in (("plain", []), ("fgm", ["train.fgm_epsilon=1.0"])):
        t = Trainer(load_config(run_config, base + extra), tmp_path / name, quiet=True)
        t.fit()
        runs[name] = t.state_.history[0]["train_loss"]
    assert runs["plain"] != runs["fgm"] and all(map(math.isfinite, runs.values()))


def test_symmetric_kl_and_rdrop():
    z1, z2 = torch.tensor(Z), torch.tensor([[1.0, 0.0, -1.0], [0.5, -1.0, 3.0]])

    def kl(p, q):
        return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))
    hand = sum(0.5 * (kl(sig(a), sig(b)) + kl(sig(b), sig(a)))
               for ra, rb in zip(Z, z2.tolist()) for a, b in zip(ra, rb)) / 2
    assert symmetric_kl(z1, z2).item() == pytest.approx(hand, rel=1e-5)
    assert symmetric_kl(torch.tensor([[-math.inf, 1.0]]), torch.tensor([[-math.inf, 1.0]])).item() == 0.0

    class NoDropout(nn.Module):                            # identical passes: R-Drop adds nothing
        def forward(self, ids, mask, labels):
            z = ids.float()
            return ModelOutput(z, LOSSES.get("bce")(z, labels))
    ids, y = torch.tensor(Z), torch.tensor(Y, dtype=torch.float32)
    assert rdrop_loss(NoDropout(), ids, ids, y, 1.0).item() == pytest.approx(hand_bce(), rel=1e-6)
