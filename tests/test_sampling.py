"""Scarce-data protocols: K shots per node and a share of train, drawn per seed."""

from __future__ import annotations

import numpy as np
import pytest

from hmtc.config import load_config
from hmtc.data.prepare import prepare
from hmtc.data.sampling import draw_fraction, draw_shots, own_nodes
from hmtc.errors import ConfigError
from hmtc.taxonomy import Taxonomy

TAX = Taxonomy.parse("ROOT\n  a\n    a1\n    a2\n  b\n    b1\n    b2\n    b3\n")


def labels(rows: list[list[str]]) -> np.ndarray:
    return TAX.compile().indicator(rows)


def single_label(n_per_leaf: dict[str, int], seed: int = 0) -> list[list[str]]:
    rows = [[leaf] for leaf, n in n_per_leaf.items() for _ in range(n)]
    return [rows[i] for i in np.random.default_rng(seed).permutation(len(rows))]


def test_own_nodes_are_the_deepest_labels():
    y = labels([["a1"], ["a1", "b2"], ["b"], ["a", "b1"]])
    own = own_nodes(y, TAX.compile())
    ids = TAX.compile().ids
    assert [[ids[i] for i in np.flatnonzero(r)] for r in own] == [["a1"], ["a1", "b2"], ["b"], ["a", "b1"]]


@pytest.mark.parametrize("k", [1, 2, 5])
def test_exact_counts_per_leaf_on_single_label_data(k):
    index = TAX.compile()
    y = labels(single_label({"a1": 9, "a2": 7, "b1": 12, "b2": 6, "b3": 8}))
    picked, short = draw_shots(y, index, k, seed=3)
    counts = own_nodes(y[picked], index).sum(0)
    assert (counts[index.leaf_mask] == k).all() and not counts[~index.leaf_mask].any() and short == {}
    assert len(picked) == 5 * k and (np.diff(picked) > 0).all()


def test_short_nodes_take_all_and_are_reported():
    index = TAX.compile()
    y = labels(single_label({"a1": 9, "a2": 2, "b1": 12, "b2": 6, "b3": 8}) + [["b"]])
    picked, short = draw_shots(y, index, 4, seed=0)
    counts = dict(zip(index.ids, own_nodes(y[picked], index).sum(0)))
    assert short == {"a2": 2, "b": 1} and counts["a2"] == 2 and counts["b"] == 1      # internal-only texts too
    assert all(counts[leaf] == 4 for leaf in ("a1", "b1", "b2", "b3"))


def test_multi_label_texts_count_for_every_leaf_they_carry():
    index = TAX.compile()
    rows = [["a1", "b1"]] * 6 + single_label({"a1": 5, "b1": 5, "a2": 5, "b2": 5, "b3": 5})
    y = labels(rows)
    picked, short = draw_shots(y, index, 3, seed=1)
    counts = own_nodes(y[picked], index).sum(0)
    assert (counts[index.leaf_mask] == 3).all() and short == {}      # a two-leaf text never overshoots


def test_draws_are_deterministic_per_seed_and_differ_across_seeds():
    index = TAX.compile()
    y = labels(single_label({"a1": 30, "a2": 30, "b1": 30, "b2": 30, "b3": 30}))
    a = draw_shots(y, index, 4, seed=7)[0]
    assert np.array_equal(a, draw_shots(y, index, 4, seed=7)[0])
    assert not np.array_equal(a, draw_shots(y, index, 4, seed=8)[0])
    dev = draw_shots(y, index, 4, seed=7, stream=1, exclude=np.isin(np.arange(len(y)), a))[0]
    assert not set(a) & set(dev) and len(dev) == 20
    assert np.array_equal(draw_fraction(100, 0.3, 5), draw_fraction(100, 0.3, 5)) and len(draw_fraction(100, 0.3, 5)) == 30


def _dataset(tmp_path, rows: list[list[str]], with_dev: bool = False):
    tax = tmp_path / "t.tax"
    TAX.save(tax)
    lines = [f"{'|'.join(r)} text number {i} " + " ".join(r) for i, r in enumerate(rows)]
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "test.txt").write_text("\n".join(lines[:10]) + "\n", encoding="utf-8")
    dev = 'dev = "dev.txt"\n' if with_dev else ""
    if with_dev:
        (tmp_path / "dev.txt").write_text("\n".join(lines[10:60]) + "\n", encoding="utf-8")
    card = tmp_path / "d.toml"
    card.write_text('name = "d"\nformat = "label_text"\ntaxonomy = "t.tax"\n[splits]\ntrain = "train.txt"\n'
                    f'test = "test.txt"\n{dev}', encoding="utf-8")
    return card


@pytest.mark.parametrize("with_dev", [False, True])
def test_prepare_draws_train_and_dev_shots(tmp_path, with_dev):
    card = _dataset(tmp_path, single_label({"a1": 20, "a2": 20, "b1": 20, "b2": 20, "b3": 3}), with_dev)
    cfg = load_config(None, [f"data.dataset={str(card)!r}", "data.shots=2", "train.seed=4"])
    data = prepare(cfg, TAX)
    index = data.index
    train_counts = own_nodes(data.labels["train"], index).sum(0)
    dev_counts = own_nodes(data.labels["dev"], index).sum(0)
    assert (train_counts[index.leaf_mask] == 2).all()
    assert data.sampling["shots"] == 2 and data.sampling["train_texts"] == 10
    if not with_dev:          # dev drawn from what train left: b3 has one text for it
        assert not set(data.texts["train"]) & set(data.texts["dev"])
        assert data.sampling["dev_short"] == {"b3": 1} and any("fewer than 2 dev texts" in n for n in data.notes)
    else:
        assert all(t.split(" ", 1)[1] in (tmp_path / "dev.txt").read_text(encoding="utf-8")
                   for t in data.texts["dev"])
        assert (dev_counts[index.leaf_mask] <= 2).all() and data.sampling["dev_texts"] == len(data.texts["dev"])
    again = prepare(cfg, TAX)
    assert again.texts == data.texts


def test_zero_shots_leave_train_and_dev_empty_and_fraction_is_one_protocol(tmp_path):
    card = _dataset(tmp_path, single_label({"a1": 5, "a2": 5, "b1": 5, "b2": 5, "b3": 5}))
    data = prepare(load_config(None, [f"data.dataset={str(card)!r}", "data.shots=0"]), TAX)
    assert data.texts["train"] == [] and data.texts["dev"] == [] and len(data.texts["test"]) == 10
    frac = prepare(load_config(None, [f"data.dataset={str(card)!r}", "data.train_fraction=0.5"]), TAX)
    assert frac.sampling["train_texts"] == round(0.5 * frac.sampling["of"])
    with pytest.raises(ConfigError, match="two protocols"):
        prepare(load_config(None, [f"data.dataset={str(card)!r}", "data.shots=2", "data.train_fraction=0.5"]), TAX)
    with pytest.raises(ConfigError, match="data.shots"):
        load_config(None, ["data.shots=-1"])
