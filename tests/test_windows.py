"""Windows (model.windows): texts longer than the encoder's positions, cut, encoded apart and joined."""

from __future__ import annotations

from dataclasses import replace
import random

import numpy as np
import pytest
import safetensors.torch
import torch

from hmtc.batching import length_batches, tokenize
from hmtc.config import load_config
from hmtc.data.prepare import taxonomy_for
from hmtc.errors import ConfigError
from hmtc.inference import cache_lower_states
from hmtc.loading import load_checkpoint
from hmtc.models import create_model
from hmtc.models.batches import collate, iterate_states
from hmtc.models.encoder import Windows
from hmtc.predict import predict_texts
from hmtc.testing import FILLER, WORDS
from hmtc.train import Trainer

VOCAB = sorted({w for ws in WORDS.values() for w in ws} | set(FILLER))
LONG = [" ".join(random.Random(seed).choices(VOCAB, k=n)) for seed, n in ((1, 91), (2, 180), (3, 40))]
SHORT = ["cat", "dog bark puppy oak leaf tree rose petal the a is was here there", "oak leaf"]
WINDOWS = ["data.max_length=200", "model.windows=true", "model.window_stride=9"]
NO_DROPOUT = "model.encoder_options={ hidden_dropout_prob = 0.0, attention_probs_dropout_prob = 0.0 }"


def _model(run_config, overrides=()):
    cfg = load_config(run_config, list(overrides))
    torch.manual_seed(0)
    return create_model(cfg, taxonomy_for(cfg).compile()).eval()


def _batch(model, texts):
    return collate(tokenize(model.tokenizer, texts, model.max_length), model.tokenizer.pad_token_id or 0)


def test_a_text_that_fits_one_window_scores_exactly_as_without_windows(run_config):
    plain, windowed = _model(run_config), _model(run_config, WINDOWS)
    assert plain.windows is None and windowed.windows.length == 64      # the tiny encoder's positions
    assert np.array_equal(plain.scores(SHORT), windowed.scores(SHORT))
    # beside a long text the short one becomes a window of its own, encoded with the other short
    # windows: the same up to rounding
    mixed = windowed.scores(SHORT + LONG, batch_size=len(SHORT) + len(LONG))
    np.testing.assert_allclose(mixed[: len(SHORT)], plain.scores(SHORT), atol=1e-5)


@pytest.mark.parametrize("stride", [0, 9, 31])
def test_each_position_takes_the_window_where_it_has_most_context(stride):
    w = Windows(64, stride, pad_id=0)
    lengths = [64, 65, 126, 127, 200, 3]
    ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for r, n in enumerate(lengths):
        ids[r, :n] = torch.arange(1, n + 1)                  # token = its position + 1
    cut = w.cut(ids, (ids > 0).long())
    # every window: the text's first token, a run of its content, the text's last token
    for row, mask in zip(cut.inputs.tolist(), cut.mask.tolist()):
        used = row[: sum(mask)]
        assert used[0] == 1 and used[-1] in lengths and used[1:-1] == list(range(used[1], used[-2] + 1))
    step, half, used = 62 - stride, stride // 2, cut.mask.sum(1)         # used: tokens of each window
    for r, n in enumerate(lengths):
        src = cut.source[r, :n]
        row, offset, first = src // 64, src % 64, int(cut.spans[r, 0]) // 64
        assert cut.inputs.reshape(-1)[src].tolist() == list(range(1, n + 1))   # every position its own token
        assert row[0] == first and offset[0] == 0 and offset[-1] == used[row[-1]] - 1   # [CLS] / [SEP]: first / last
        j, k, inner = torch.arange(n - 2), row[1:-1] - first, offset[1:-1]
        assert torch.equal(k, torch.clamp((j - half).clamp_min(0) // step, max=int(row[-1]) - first))
        assert bool(((inner >= 1) & (inner <= used[row[1:-1]] - 2)).all())     # never a window's own [CLS] / [SEP]


def test_joined_states_are_the_windows_states_and_inner_special_tokens_are_left_out(run_config):
    model = _model(run_config, ["data.max_length=200", "model.windows=true", "model.window_stride=10"])
    ids, mask = _batch(model, LONG[1:2])
    n, cls_, sep = int(mask.sum()), int(ids[0, 0]), int(ids[0, int(mask.sum()) - 1])
    content = ids[0, 1: n - 1].tolist()
    with torch.no_grad():
        states, text_mask = model.encode(ids, mask)
        # by hand: windows of 62 content tokens, 10 repeated, each with its own [CLS] and [SEP]
        starts = list(range(0, len(content) - 10, 52))
        one = torch.ones(1, 64, dtype=torch.long)
        hand = [model.encoder(torch.tensor([[cls_] + content[s: s + 62] + [sep]]), one)[0] for s in starts]
    assert torch.equal(text_mask, mask) and states.shape == (1, n, 32)
    assert torch.allclose(states[0, 0], hand[0][0], atol=1e-5)                  # the text's [CLS]: window 0
    assert torch.allclose(states[0, n - 1], hand[-1][-1], atol=1e-5)            # its [SEP]: the last window
    for j in range(len(content)):
        k = min(max(0, j - 5) // 52, len(starts) - 1)
        assert torch.allclose(states[0, 1 + j], hand[k][1 + j - starts[k]], atol=1e-5), j
    inner = torch.stack([h[0] for h in hand[1:]] + [h[-1] for h in hand[:-1]])   # inner [CLS] / [SEP]
    assert torch.cdist(inner, states[0]).min() > 1e-3


def test_short_windows_are_encoded_apart_as_they_would_be_beside_full_ones(run_config):
    """A text's last window, cut to its own length, gets the states it gets padded to W."""
    model = _model(run_config, ["data.max_length=200", "model.windows=true", "model.window_length=20"])
    cut = model.windows.cut(*_batch(model, LONG))
    lengths = cut.mask.sum(1)
    assert (lengths <= 10).any() and (lengths > 10).any()        # both groups occur
    with torch.no_grad():
        apart = model.windows.encode(cut, model._encode)
        together = model.encoder(cut.inputs, cut.mask)
    real = cut.mask.bool()
    assert apart.shape == together.shape and torch.allclose(apart[real], together[real], atol=1e-5)


def test_fgm_and_the_gradient_penalty_train_on_windows_encoded_in_parts(run_config):
    from hmtc.regularizers import backward_step, word_embeddings
    model = _model(run_config, ["data.max_length=200", "model.windows=true", "model.window_length=20"]).train()
    ids, mask = _batch(model, LONG)
    labels = torch.zeros(len(LONG), sum(c.out_features for c in model.classifiers))
    loss = backward_step(lambda: model(ids, mask, labels).loss, word_embeddings(model), fgm_epsilon=1.0, gp_weight=0.1)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert torch.isfinite(loss) and all(g is not None and torch.isfinite(g).all() for g in grads)


def test_cached_windows_give_the_uncached_scores(run_config):
    model = _model(run_config, WINDOWS + ["model.freeze_layers=1", "model.window_length=24"])
    ids = tokenize(model.tokenizer, SHORT + LONG, model.max_length)
    cache = cache_lower_states(model.encoder, ids, 0, 4, False, torch.device("cpu"), windows=model.windows)
    assert [len(c) for c in cache][:1] == [3] and len(cache[3]) > len(ids[3])       # windowed layout
    batches = length_batches([len(x) for x in ids], 4, shuffle=False)
    with torch.no_grad():
        for b, x, mask, _ in iterate_states(cache, batches):
            cached = model(None, mask, lower_states=x).logits
            full = model(*_batch(model, [(SHORT + LONG)[i] for i in b])).logits
            assert torch.allclose(cached, full, atol=1e-5)


def test_windows_in_bf16_score_near_fp32(run_config):
    model = _model(run_config, WINDOWS)
    fp32, bf16 = model.scores(LONG, bf16=False), model.scores(LONG, bf16=True)
    assert np.isfinite(bf16).all() and np.abs(fp32 - bf16).max() < 0.1


def test_a_cached_windowed_run_trains_like_an_uncached_one_and_predicts(run_config, tmp_path):
    """Windows of 8 tokens (6 of the text) cut the tiny training texts of 7 text tokens; without
    dropout caching changes nothing."""
    base = ["train.epochs=1", "train.record_dir=''", "model.freeze_layers=1", NO_DROPOUT, "model.windows=true",
            "model.window_length=8", "model.window_stride=2"]
    plain = Trainer(load_config(run_config, base), tmp_path / "plain", quiet=True)
    plain.fit()
    cached = Trainer(load_config(run_config, base + ["train.cache_frozen=true"]), tmp_path / "cached", quiet=True)
    cached.fit()
    assert sum(len(c) for c in cached.cache_) > sum(map(len, cached.data_.token_ids["train"]))
    a = safetensors.torch.load_file(str(tmp_path / "plain" / "last" / "model.safetensors"))
    b = safetensors.torch.load_file(str(tmp_path / "cached" / "last" / "model.safetensors"))
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-4), k
    ckpt = load_checkpoint(tmp_path / "cached" / "best")
    assert ckpt.model.windows.length == 8
    rows = list(predict_texts(ckpt, LONG + SHORT, chunk=2))           # streamed in chunks of 2
    assert len(rows) == 6 and all("labels" in r for r in rows)
    np.testing.assert_allclose(ckpt.scores(LONG), ckpt.scores(LONG[::-1])[::-1], atol=1e-5)


@pytest.mark.parametrize("model, options", [("msml", None), ("flat", {"head": "mean"}), ("global", {}), ("local", {})])
def test_a_windowed_model_exports_to_onnx_and_scores_like_torch(run_config, tmp_path, model, options):
    """The graph reads windows cut outside it; long texts, short ones and both in one batch;
    every head pools across the joined windows; predict streams through the exported graph."""
    pytest.importorskip("onnxruntime")
    from hmtc.export import export_onnx
    from hmtc.loading import load_for_inference
    cfg = load_config(run_config, ["train.epochs=1", "train.record_dir=''", f"model.name={model}", "model.windows=true",
                                   "model.window_length=16", "model.window_stride=4"])
    cfg = cfg if options is None else replace(cfg, model=replace(cfg.model, options=options))
    Trainer(cfg, tmp_path / "r", quiet=True).fit()
    best = tmp_path / "r" / "best"
    export_onnx(best)
    torch_model = load_checkpoint(best)
    assert torch_model.model.windows.length == 16
    texts = LONG + SHORT
    ref = torch_model.scores(texts)
    for batch_size in (1, 2, 8):        # a short text alone (one window), beside long ones, all at once
        got = load_for_inference(best, "onnx", threads=1).scores(texts, batch_size=batch_size)
        np.testing.assert_allclose(got, ref, atol=1e-4)
    int8 = load_for_inference(best, "onnx-int8", threads=2).scores(texts)
    assert int8.shape == ref.shape and np.abs(int8 - ref).max() < 0.5
    streamed = list(predict_texts(load_for_inference(best, "onnx", threads=1), texts, chunk=2, all_scores=True))
    wanted = list(predict_texts(torch_model, texts, all_scores=True))
    assert len(streamed) == len(wanted) == len(texts)
    for row, want in zip(streamed, wanted):
        assert list(row["all_scores"].values()) == pytest.approx(list(want["all_scores"].values()), abs=1e-4)


@pytest.mark.parametrize("overrides, message", [
    (["data.max_length=100"], "model.windows = true cuts longer texts"),
    (["data.max_length=100", "model.windows=true", "model.window_length=65"], "window_length 65 exceeds"),
    (["data.max_length=100", "model.windows=true", "model.window_stride=32"], "half a window"),
])
def test_window_config_errors(run_config, overrides, message):
    with pytest.raises(ConfigError, match=message):
        _model(run_config, overrides)


def test_the_label_token_head_refuses_windows(run_config):
    cfg = load_config(run_config, ["data.max_length=100", "model.windows=true", "model.name='flat'"])
    cfg = replace(cfg, model=replace(cfg.model, options={"head": "label_token"}))
    with pytest.raises(ConfigError, match="label_token head"):
        create_model(cfg, taxonomy_for(cfg).compile())
