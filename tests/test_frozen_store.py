"""The frozen layers' states on disk (train.frozen_store): shards, reuse across runs, evaluation."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from hmtc.config import load_config
from hmtc.data.prepare import taxonomy_for
from hmtc.frozen_store import FrozenStore, store_root, text_key
from hmtc.inference import cache_lower_states, frozen_fingerprint, score_with_store
from hmtc.models import create_model
from hmtc.testing import FILLER, WORDS

VOCAB = sorted({w for ws in WORDS.values() for w in ws} | set(FILLER))
LONG = [" ".join(random.Random(seed).choices(VOCAB, k=n)) for seed, n in ((1, 91), (2, 180), (3, 40), (4, 7))]
WINDOWS = ["data.max_length=200", "model.windows=true", "model.window_length=24", "model.window_stride=3",
           "model.freeze_layers=1"]


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HMTC_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_a_store_gives_back_what_was_put_across_instances_and_shards(tmp_path):
    store = FrozenStore(tmp_path / "fp")
    a, b, c = torch.randn(3, 4), torch.randn(5, 4), torch.randn(1, 4)
    keys = [text_key([1, 2]), text_key([3]), text_key([4, 5, 6])]
    assert store.get(keys) == [None, None, None] and len(store) == 0
    store.put(keys[:2], [a, b])
    store.put(keys[2:], [c])
    assert sorted(p.name for p in (tmp_path / "fp").iterdir()) == ["000000.safetensors", "000001.safetensors"]
    again = FrozenStore(tmp_path / "fp")           # another process reads the shards
    got = again.get([keys[2], text_key([9]), keys[0], keys[1]])
    assert torch.equal(got[0], c) and got[1] is None and torch.equal(got[2], a) and torch.equal(got[3], b)
    assert again.holds(keys + [text_key([9])]) == 3
    assert text_key([1, 2]) != text_key([2, 1]) and len(text_key([1])) == 16
    got = again.get(keys[:1], torch.bfloat16)
    assert got[0].dtype == torch.bfloat16 and torch.equal(got[0], a.to(torch.bfloat16))


def test_a_damaged_shard_is_skipped_and_a_failed_write_stores_nothing(tmp_path):
    store = FrozenStore(tmp_path / "fp")
    store.put([text_key([1])], [torch.ones(2, 3)])
    (tmp_path / "fp" / "000001.safetensors").write_bytes(b"not a shard")
    with pytest.warns(UserWarning, match="unreadable"):
        assert FrozenStore(tmp_path / "fp").holds([text_key([1])]) == 1
    (tmp_path / "file").write_text("x")
    blocked = FrozenStore(tmp_path / "file" / "fp")            # its folder cannot be made
    with pytest.warns(UserWarning, match="not stored"):
        assert blocked.put([text_key([2])], [torch.ones(1, 3)]) is False
    assert blocked.get([text_key([2])]) == [None]
    assert not list(tmp_path.glob("**/*.tmp"))


def test_cached_states_are_computed_once_and_read_back_bitwise(run_config, tmp_path):
    cfg = load_config(run_config, WINDOWS)
    torch.manual_seed(0)
    model = create_model(cfg, taxonomy_for(cfg).compile()).eval()
    from hmtc.batching import tokenize
    ids = tokenize(model.tokenizer, LONG, model.max_length)
    store = FrozenStore(tmp_path / "fp")
    args = (model.encoder, ids, 0, 2, False, torch.device("cpu"), None, model.windows)
    plain = cache_lower_states(*args)
    first = cache_lower_states(*args, store=store, shard_rows=50)   # several shards
    assert len(list((tmp_path / "fp").glob("*.safetensors"))) > 1
    second = cache_lower_states(*args, store=FrozenStore(tmp_path / "fp"), keep=torch.bfloat16)
    assert all(torch.equal(x, y) for x, y in zip(plain, first))
    assert all(y.dtype == torch.bfloat16 and torch.equal(x.to(torch.bfloat16), y) for x, y in zip(plain, second))


def test_scoring_through_the_store_equals_the_uncached_model(run_config, home):
    cfg = load_config(run_config, WINDOWS)
    torch.manual_seed(0)
    model = create_model(cfg, taxonomy_for(cfg).compile()).eval()
    model.eval_batch_size = 2
    texts = LONG + ["cat", "oak leaf tree"]
    for bf16 in (False, True):
        model.bf16 = bf16
        full = model.scores(texts)
        built, stored = score_with_store(model, texts, chunk=4)    # computes and stores, 2 batches a chunk
        read, again = score_with_store(model, texts, chunk=4)      # reads
        assert (stored, again) == (0, len(texts))
        assert np.array_equal(full, built) and np.array_equal(full, read)
    # part of a chunk stored, by another call in other batches: the rest is computed beside it
    model.bf16 = False
    fresh = create_model(cfg, taxonomy_for(cfg).compile()).eval()
    fresh.eval_batch_size, fresh.bf16 = 3, False
    with torch.no_grad():
        fresh.encoder.backbone.embeddings.word_embeddings.weight.mul_(1.5)    # another frozen part
    score_with_store(fresh, texts[1:3])
    mixed, stored = score_with_store(fresh, texts)
    assert stored == 2 and np.allclose(mixed, fresh.scores(texts), atol=1e-5)
    folder = store_root() / frozen_fingerprint(model.encoder, True, model.windows)
    assert folder.is_dir() and str(folder).startswith(str(home))


def test_runs_share_the_store_and_train_as_without_it(run_config, home, tmp_path, invoke):
    """A second run over the same frozen part (another seed, in another process) reads every training text's states
    and its evaluation every test text's; both train and score exactly as runs without a store."""
    common = ["--quiet", "--set", "train.epochs=1", "--set", "model.freeze_layers=1", "--set",
              "train.cache_frozen=true", "--set", "train.record_dir=''"]
    store = [*common, "--set", "train.frozen_store=true"]
    invoke("train", run_config, *store, "--out", tmp_path / "a")
    invoke("train", run_config, *store, "--set", "train.seed=7", "--out", tmp_path / "b")
    invoke("train", run_config, *common, "--set", "train.seed=7", "--out", tmp_path / "c")
    states = {k: json.loads((tmp_path / k / "last" / "train_state.json").read_text()) for k in "abc"}
    assert "cache_stored" not in states["a"] and "cache_stored" not in states["c"]
    assert states["b"]["cache_stored"] > 0
    assert (tmp_path / "b" / "best" / "model.safetensors").read_bytes() == \
        (tmp_path / "c" / "best" / "model.safetensors").read_bytes()
    metrics = {k: json.loads((tmp_path / k / "metrics.json").read_text()) for k in "abc"}
    assert metrics["a"]["inference"]["stored_texts"] == 0
    assert metrics["b"]["inference"]["stored_texts"] > 0 and "stored_texts" not in metrics["c"]["inference"]
    assert metrics["b"]["test"] == metrics["c"]["test"]


def test_a_store_without_the_cache_is_refused(run_config, invoke):
    r = invoke("train", run_config, "--quiet", "--set", "train.frozen_store=true", code=2)
    assert "train.frozen_store" in r.output and "cache_frozen" in r.output
