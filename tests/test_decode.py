"""Decoding: every method's output is consistent, whatever the taxonomy, scores or thresholds."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hmtc.decode import decode, tune_global_threshold, tune_label_thresholds, tune_weights, tuned_micro_f1
from hmtc.errors import ConfigError
from hmtc.metrics import orphan_mask
from hmtc.taxonomy import Taxonomy


@st.composite
def taxonomies(draw, dag: bool):
    """A random tree (or DAG: extra parents from strictly earlier nodes) of 1..12 nodes."""
    n = draw(st.integers(1, 12))
    t = Taxonomy.new(header=False)
    for i in range(n):
        parent = draw(st.sampled_from([t.root] + [f"n{j}" for j in range(i)]))
        t = t.add(f"n{i}", parent)
        if dag and i >= 2 and draw(st.booleans()):
            extra = draw(st.sampled_from([f"n{j}" for j in range(i)]))
            if extra != parent:
                t = t.move(f"n{i}", extra, keep_parents=True)
    return t


def assert_consistent(keep: np.ndarray, index) -> None:
    """Strict: every parent of every kept node is kept."""
    assert not np.asarray(orphan_mask(keep, index, "strict")).any()
    par, valid = index.parents_padded, index.parents_padded >= 0
    rows, cols = np.nonzero(keep)
    assert np.all(keep[rows[:, None], np.where(valid[cols], par[cols], 0)] | ~valid[cols])


@settings(max_examples=60, deadline=None)
@given(data=st.data(), dag=st.booleans(), method=st.sampled_from(["best", "top-down", "closure"]),
       single=st.booleans(), per_label=st.booleans())
def test_decoded_output_is_always_consistent(data, dag, method, single, per_label):
    tax = data.draw(taxonomies(dag))
    index = tax.compile()
    seed = data.draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    scores = rng.normal(0, 3, size=(20, index.n_nodes)).astype(np.float32)
    thr = rng.normal(0, 1, size=index.n_nodes) if per_label else float(rng.normal())
    keep = decode(scores, index, method, thr, single_path=single and method == "best")
    assert keep.shape == scores.shape and keep.dtype == bool
    assert_consistent(keep, index)


def test_best_is_the_max_margin_consistent_set_on_small_trees():
    tax = Taxonomy.parse("ROOT\n  a\n    a1\n    a2\n  b\n    b1\n      b1x\n")
    index = tax.compile()
    rng = np.random.default_rng(0)
    scores = rng.normal(0, 2, size=(200, index.n_nodes)).astype(np.float32)
    keep = decode(scores, index, "best", 0.0)
    sets = [np.array(bits, dtype=bool) for bits in itertools.product([0, 1], repeat=index.n_nodes)]
    consistent = np.array([s for s in sets if not np.asarray(orphan_mask(s[None], index)).any()])
    totals = scores @ consistent.T.astype(np.float32)         # (S, n_sets)
    best_total = totals.max(1)
    got = (scores * keep).sum(1)
    assert np.allclose(got, best_total, atol=1e-5)


def test_best_may_stop_at_an_internal_node_and_single_path_keeps_one_path():
    tax = Taxonomy.parse("ROOT\n  a\n    a1\n    a2\n  b\n    b1\n")
    index = tax.compile()
    col = index.id_to_index
    s = np.full((2, index.n_nodes), -5.0, dtype=np.float32)
    s[0, col["a"]] = 3.0                                   # confident parent, unsure children
    s[1, [col["a"], col["a1"], col["b"], col["b1"]]] = [2.0, 1.0, 1.5, 2.5]
    multi = decode(s, index, "best", 0.0)
    assert index.labels_of(multi) == [["a"], ["a", "b", "a1", "b1"]]
    single = decode(s, index, "best", 0.0, single_path=True)
    assert index.labels_of(single) == [["a"], ["b", "b1"]]   # b->b1 path beats a->a1


def test_single_path_does_not_favour_shallow_leaves():
    """Ragged depth: a deep leaf as sure as a shallow one must not lose for its longer path."""
    index = Taxonomy.parse("ROOT\n  a\n  b\n    b1\n      b11\n").compile()
    col = index.id_to_index
    s = np.full((2, index.n_nodes), -3.0, dtype=np.float32)
    s[0, [col["b"], col["b1"], col["b11"]]] = 1.0          # the whole deep path at +1 ...
    s[0, col["a"]] = 0.8                                    # ... beats a shallow leaf at +0.8
    s[1, col["a"]] = 1.2
    s[1, [col["b"], col["b1"], col["b11"]]] = 1.0
    assert index.labels_of(decode(s, index, "best", 0.0, single_path=True)) == [["b", "b1", "b11"], ["a"]]


def test_top_down_drops_orphans_and_closure_adds_ancestors():
    index = Taxonomy.parse("ROOT\n  a\n    a1\n").compile()
    s = np.array([[-1.0, 2.0]], dtype=np.float32)         # child confident, parent not
    assert index.labels_of(decode(s, index, "top-down")) == [[]]
    assert index.labels_of(decode(s, index, "closure")) == [["a", "a1"]]


def test_threshold_tuning_picks_a_separating_threshold():
    index = Taxonomy.parse("ROOT\n  a\n  b\n").compile()
    gold = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=bool)
    scores = np.where(gold, 1.5, 0.8).astype(np.float32)   # positives above 1.5, negatives at 0.8
    t = tune_global_threshold(scores, gold, index, "best")
    assert 0.8 <= t < 1.5
    per = tune_label_thresholds(scores, gold, t, min_support=1)
    assert ((per >= 0.8) & (per < 1.5)).all()
    per_rare = tune_label_thresholds(scores, gold, 7.0, min_support=5)
    assert (per_rare == 7.0).all()


def test_tuned_weights_combine_members_on_other_scales_and_mute_noise():
    """Two informative members with independent noise, the second less noisy and on a tenth of the
    first's scale (SVM margins beside logits): their tuned sum beats each alone, weighs the second
    above its spread-matched start, and keeps the first member's spread; identical members keep
    equal weights; a member that is only noise is weighed below its spread-matched start."""
    index = Taxonomy.parse("ROOT\n  a\n    a1\n    a2\n  b\n    b1\n    b2\n").compile()
    rng = np.random.default_rng(0)
    leaf = rng.integers(0, 4, 300)
    gold = np.zeros((300, index.n_nodes), dtype=bool)
    for i, x in enumerate(leaf):
        name = ["a1", "a2", "b1", "b2"][x]
        gold[i, [index.ids.index(name[0]), index.ids.index(name)]] = True
    s1 = 3 * gold + rng.normal(0, 2.5, gold.shape) - 1.5
    s2 = 0.1 * (3 * gold + rng.normal(0, 1.5, gold.shape) - 1.5)
    flags = ("best", True)
    w, f1, steps = tune_weights([s1, s2], gold, index, *flags)
    alone = [tuned_micro_f1(s, gold, index, *flags) for s in (s1, s2)]
    assert f1 > max(alone) and steps[0] == 0 and steps[1] > 0
    assert w[1] / w[0] > s1.std() / s2.std()
    assert (w[0] * s1 + w[1] * s2).std() == pytest.approx(s1.std())
    assert f1 == pytest.approx(tuned_micro_f1((w[0] * s1 + w[1] * s2).astype(np.float32), gold, index, *flags))
    w, _, steps = tune_weights([s1, s1.copy()], gold, index, *flags)
    assert w[0] == pytest.approx(w[1]) and list(steps) == [0, 0]
    noise = 0.1 * rng.normal(0, 1, gold.shape)
    w, _, steps = tune_weights([s1, noise], gold, index, *flags)
    assert steps[1] < 0 and w[1] / w[0] < s1.std() / noise.std()
    w, _, _ = tune_weights([s1, s2], gold, index, *flags, threshold=0.5)      # a fixed threshold is kept
    assert (w[0] * s1 + w[1] * s2).std() == pytest.approx(s1.std())


def test_unknown_method():
    index = Taxonomy.parse("ROOT\n  a\n").compile()
    with pytest.raises(ConfigError, match="unknown decoding method 'greedy'; known: best, closure, top-down"):
        decode(np.zeros((1, 1)), index, "greedy")


def test_at_least_one_fills_empty_rows_with_the_most_probable_path():
    index = Taxonomy.parse("ROOT\n  a\n    a1\n    a2\n  b\n    b1\n").compile()
    col = index.id_to_index
    s = np.full((2, index.n_nodes), -3.0, dtype=np.float32)
    s[0, [col["b"], col["b1"]]] = [-0.5, -0.2]              # nothing passes 0; b->b1 most probable
    s[1, col["a"]] = 2.0                                      # row 1 already has a node: untouched
    for method in ("best", "top-down", "closure"):
        keep = decode(s, index, method, 0.0, at_least_one=True)
        assert index.labels_of(keep) == [["b", "b1"], ["a"]]
        assert_consistent(keep, index)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), dag=st.booleans(), method=st.sampled_from(["best", "top-down", "closure"]))
def test_completion_is_consistent_and_ends_at_leaves(data, dag, method):
    from hmtc.decode import stops_early
    index = data.draw(taxonomies(dag)).compile()
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    scores = rng.normal(0, 3, size=(20, index.n_nodes)).astype(np.float32)
    thr = float(rng.normal())
    plain = decode(scores, index, method, thr)
    done = decode(scores, index, method, thr, complete=True)
    assert_consistent(done, index)
    assert np.all(done >= plain)                        # completion only adds nodes
    if index.is_tree:
        assert not stops_early(done, index).any()       # every kept path reaches a leaf
    untouched = ~stops_early(plain, index)
    assert np.array_equal(done[untouched], plain[untouched])


def test_completion_adds_the_best_child_at_each_level():
    from hmtc.decode import complete_to_leaf, stops_early
    index = Taxonomy.parse("ROOT\n  a\n    a1\n    a2\n      a2x\n      a2y\n  b\n    b1\n").compile()
    col = index.id_to_index
    scores = np.zeros((3, index.n_nodes), np.float32)
    scores[:, col["a2"]], scores[:, col["a2y"]] = 1.0, 2.0
    keep = np.zeros_like(scores, dtype=bool)
    keep[0, col["a"]] = True                                        # a -> a2 (best child) -> a2y
    keep[1, [col["a"], col["a1"]]] = True                           # already at a leaf
    keep[2, [col["b"]]] = True                                      # b -> b1
    assert stops_early(keep, index).tolist() == [True, False, True]
    out = complete_to_leaf(keep, scores, index)
    ids = [sorted(np.array(index.ids)[row]) for row in out]
    assert ids == [["a", "a2", "a2y"], ["a", "a1"], ["b", "b1"]]


@settings(max_examples=60, deadline=None)
@given(data=st.data(), dag=st.booleans())
def test_max_constraint_is_consistent_for_every_input(data, dag):
    import torch

    from hmtc.models.constraint import constrain, descendant_mask
    index = data.draw(taxonomies(dag)).compile()
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    z = torch.as_tensor(rng.normal(0, 3, size=(16, index.n_nodes)), dtype=torch.float32)
    under = torch.as_tensor(descendant_mask(index))
    out = constrain(z, under).numpy()
    rows = np.repeat(np.arange(index.n_nodes), index.n_parents)
    assert np.all(out[:, index.parent_idx] >= out[:, rows])        # a parent scores at least its child
    assert np.all(out >= z.numpy())
    for t in rng.normal(0, 2, size=5):
        assert_consistent(out > t, index)                          # any threshold: consistent
    y = torch.as_tensor(index.closure(rng.random((16, index.n_nodes)) < 0.2))
    fit = constrain(z, under, y).numpy()
    assert np.all(fit <= out)
    assert np.array_equal(fit[~y.numpy()], out[~y.numpy()])        # negatives: the plain MCM
    pos = y.numpy()
    hand = np.where(pos[:, None, :] & descendant_mask(index)[None], z.numpy()[:, None, :], -np.inf).max(-1)
    assert np.allclose(fit[pos], hand[pos])                        # positives: max over positive descendants


def test_every_registry_names_what_it_knows():
    from hmtc.data.catalog import get_spec
    from hmtc.errors import DataError
    from hmtc.loading import ENGINES
    from hmtc.models import MODELS
    from hmtc.train import SCHEDULES
    for registry, known in ((MODELS, "ensemble, flat, global, local, msml, proto, tfidf, zeroshot"), (SCHEDULES, "constant, cosine, linear"),
                            (ENGINES, "onnx, onnx-int8, torch")):
        with pytest.raises(ConfigError, match=f"; known: {known}$"):
            registry.get("nope")
    with pytest.raises(DataError, match=r"unknown dataset 'due' \(did you mean 'duee'\?\); known: 20newsgroups, "
                                        r"duee, goemotions; or give a dataset .toml file"):
        get_spec("due")


def test_label_thresholds_shrink_toward_the_base_by_dev_support():
    from hmtc.decode import tune_label_thresholds
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(40, 3)).astype(np.float32)
    gold = np.zeros((40, 3), dtype=bool)
    gold[:2, 0] = True                      # 2 positives
    gold[:20, 1] = True                     # 20 positives
    own = tune_label_thresholds(scores, gold, 0.0, min_support=0)
    base = np.array([0.5, -0.5, 1.0], dtype=np.float32)
    got = tune_label_thresholds(scores, gold, base, prior=4.0)
    n = gold.sum(0)
    np.testing.assert_allclose(got, (n * own + 4.0 * base) / (n + 4.0), rtol=1e-6)
    assert got[2] == base[2]                 # no positive: the base itself
    old = tune_label_thresholds(scores, gold, base)          # no prior: under 5 positives keep the base
    assert old[0] == base[0] and old[1] == own[1]


def test_level_thresholds_maximise_each_level_micro_f1():
    from hmtc.decode import GRID, tune_level_thresholds
    index = Taxonomy.parse("ROOT\n  a\n    a1\n    a2\n  b\n    b1\n").compile()
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(30, index.n_nodes)).astype(np.float32)
    gold = rng.random((30, index.n_nodes)) < 0.4
    got = tune_level_thresholds(scores, gold, index, 0.0)
    for sl in index.level_slices:
        assert len(set(got[sl])) == 1
        f1 = [2 * ((scores[:, sl] > t) & gold[:, sl]).sum() / ((scores[:, sl] > t).sum() + gold[:, sl].sum())
              for t in GRID]
        t = got[sl][0]
        assert np.isclose(f1[list(GRID).index(t)], max(f1))
    none = tune_level_thresholds(scores, np.zeros_like(gold), index, 0.75)
    assert (none == 0.75).all()


def test_unsure_marks_forced_guesses_and_back_off_stops_at_the_deepest_sure_node():
    """A path that at_least_one forced is unsure node by node; a parent kept below its threshold
    for a child above its own is not (closure implies it). Backing off drops the guesses, keeping
    a forced level-1 node where nothing is sure and at_least_one asks for an answer."""
    from hmtc.decode import unsure
    index = Taxonomy.parse("ROOT\n  a\n    a1\n    a2\n  b\n    b1\n").compile()
    col = index.id_to_index
    s = np.full((3, index.n_nodes), -3.0, dtype=np.float32)
    s[0, [col["b"], col["b1"]]] = [-0.5, -0.2]              # nothing passes 0: b -> b1 forced
    s[1, [col["a"], col["a2"]]] = [-0.5, 1.0]               # a2 sure, a below but implied
    s[2, [col["a"], col["a1"]]] = [2.0, -1.0]               # a sure; a1 added by completion
    keep = decode(s, index, "closure", 0.0, at_least_one=True, complete=True)
    assert index.labels_of(keep) == [["b", "b1"], ["a", "a2"], ["a", "a1"]]
    assert index.labels_of(unsure(keep, s, 0.0, index)) == [["b", "b1"], [], ["a1"]]
    backed = decode(s, index, "closure", 0.0, at_least_one=True, complete=True, back_off=True)
    assert index.labels_of(backed) == [["b"], ["a", "a2"], ["a"]]
    assert_consistent(backed, index)
    assert index.labels_of(decode(s, index, "closure", 0.0, complete=True, back_off=True)) == [[], ["a", "a2"], ["a"]]


@settings(max_examples=60, deadline=None)
@given(data=st.data(), dag=st.booleans(), method=st.sampled_from(["best", "top-down", "closure"]))
def test_back_off_is_consistent_and_keeps_every_sure_node(data, dag, method):
    from hmtc.decode import unsure
    index = data.draw(taxonomies(dag)).compile()
    s = np.random.default_rng(data.draw(st.integers(0, 2**16))).normal(0, 3, size=(20, index.n_nodes)).astype(np.float32)
    keep = decode(s, index, method, 0.0, at_least_one=True, complete=True)
    backed = decode(s, index, method, 0.0, at_least_one=True, complete=True, back_off=True)
    assert_consistent(backed, index)
    assert not (backed & ~keep).any()                            # it only removes
    sure = keep & ~unsure(keep, s, 0.0, index)
    assert not (sure & ~backed).any()                            # and never a sure node
    assert (backed.any(1) == keep.any(1)).all()                  # at_least_one still answers


def test_back_off_through_train_eval_and_predict(run_config, tmp_path, invoke):
    """decode.back_off is evaluated, stored in decode.json, and applied by predict (--no-back-off
    overrides it): predictions with it are those without it less their unsure nodes."""
    import json
    run = tmp_path / "run"
    invoke("train", run_config, "--quiet", "--out", run, "--set", "train.epochs=1", "--set", "decode.back_off=true",
           "--set", "decode.at_least_one=true", "--set", "train.record_dir=''")
    path = run / "best" / "decode.json"
    dec = json.loads(path.read_text())
    assert dec["back_off"] is True
    # a threshold no logit of the tiny model passes: every answer is forced by at_least_one
    path.write_text(json.dumps(dec | {"per_label_thresholds": None, "threshold": 8.0}))
    texts = ["cat meow here", "zzz qqq", "oak tree", "the of and"]
    on = [json.loads(x) for x in invoke("predict", run, *texts, "-q").output.splitlines() if x.startswith("{")]
    off = [json.loads(x) for x in invoke("predict", run, *texts, "-q", "--no-back-off").output.splitlines()
           if x.startswith("{")]
    index = Taxonomy.load(run / "best" / "taxonomy.tax").compile()
    top = {index.ids[i] for i in np.flatnonzero(index.levels == 1)}
    assert any(b["unsure"] for b in off)                 # the case is exercised: a guess to back off from
    for a, b in zip(on, off):
        kept = [n for n in b["labels"] if n not in b["unsure"]]
        assert a["labels"] == (kept or [n for n in b["labels"] if n in top])
        assert set(a["unsure"]) <= top


def test_decoding_object_resolves_tunes_applies_and_round_trips():
    """Decoding: "auto" flags from the training labels, tuning as the separate functions tune,
    apply as decode() decodes, and decode.json written and read back (older files: defaults)."""
    from hmtc.calibration import fit_temperatures
    from hmtc.config import DecodeConfig
    from hmtc.decode import Decoding, tune_level_thresholds
    tax = Taxonomy.parse("ROOT\n  a\n    a1\n    a2\n  b\n    b1\n")
    index = tax.compile()
    one_leaf = index.indicator([["a1"], ["b1"], ["a2"]])
    d = DecodeConfig(method="best", single_path="auto", at_least_one="auto", complete="auto", threshold="tune",
                     per_label=True, per_level=True, label_prior=2.0, back_off=False)
    dec = Decoding.resolve(d, index, one_leaf)
    assert (dec.single_path, dec.at_least_one, dec.complete) == (True, True, True)
    two = Decoding.resolve(d, index, index.indicator([["a1", "b1"], []]))
    assert (two.single_path, two.at_least_one) == (False, False)
    rng = np.random.default_rng(0)
    gold = index.indicator([[x] for x in rng.choice(["a1", "a2", "b1"], 40)])
    scores = (gold * 2.0 - 1.0 + rng.normal(0, 1.0, gold.shape)).astype(np.float32)
    tuned = dec.tune(d, scores, gold, index, fit_temperatures)
    t0 = tune_global_threshold(scores, gold, index, "best", True, at_least_one=True, complete=True)
    want = tune_label_thresholds(scores, gold, tune_level_thresholds(scores, gold, index, t0), prior=2.0)
    assert tuned.threshold == pytest.approx(t0) and np.allclose(tuned.per_label_thresholds, want)
    assert np.array_equal(tuned.apply(scores, index), decode(scores, index, "best", want, True, True, True))
    back = Decoding.from_json(tuned.to_json())
    assert np.array_equal(back.apply(scores, index), tuned.apply(scores, index)) and back.temperatures == tuned.temperatures
    old = Decoding.from_json({"threshold": 0.5}, method="top-down")         # a decode.json from before the flags
    assert (old.method, old.threshold, old.complete, old.per_label_thresholds) == ("top-down", 0.5, False, None)
    untuned = dec.tune(d, scores[:0], gold[:0], index, fit_temperatures)   # no dev texts: nothing tuned
    assert untuned.threshold == 0.0 and untuned.per_label_thresholds is None and untuned.temperatures == (1.0, 1.0)
