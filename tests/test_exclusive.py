"""Exclusive sibling groups: the ``!exclusive`` mark, its edits, the compiled groups, the group
loss in every model, decoding that keeps at most one child per group, and from-labels."""

from __future__ import annotations

from dataclasses import replace
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from typer.testing import CliRunner

from hmtc.loading import load_checkpoint
from hmtc.cli import app
from hmtc.config import load_config
from hmtc.decode import decode, keep_one_per_group, stops_early
from hmtc.errors import TaxonomyError
from hmtc.losses import ExclusiveLoss, exclusive_loss
from hmtc.metrics import orphan_mask
from hmtc.models import make_config
from hmtc.models.flat import FlatModel
from hmtc.models.global_ import GlobalModel
from hmtc.models.local import LocalModel
from hmtc.models.constraint import constrain
from hmtc.models.msml import MSMLModel
from hmtc.taxonomy import Taxonomy
from hmtc.train import Trainer

from conftest import TAXONOMY
from test_decode import taxonomies

MARKED = """# groups: the root's children, and a's
ROOT !exclusive
  a "Alpha" !exclusive
    a-1
    a-2
    a-3 "Three"
  b
    b-1 !exclusive
      b-1-x
      b-1-y
    &a-2
"""
runner = CliRunner()


def write(tmp_path: Path, text: str, name: str = "t.tax") -> Path:
    p = tmp_path / name
    p.write_bytes(text.encode("utf-8"))
    return p


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def group_sizes(keep: np.ndarray, index) -> np.ndarray:
    """(S, G) kept children of each group."""
    kids = index.exclusive_children
    return (keep[:, np.where(kids >= 0, kids, 0)] & (kids >= 0)).sum(2)


# ---- format ----------------------------------------------------------------------------
def test_round_trip_is_byte_identical(tmp_path):
    p = write(tmp_path, MARKED)
    t = Taxonomy.load(p)
    assert t.is_exclusive("ROOT") and t.is_exclusive("a") and t.is_exclusive("b-1")
    assert not t.is_exclusive("b") and t.name("a") == "Alpha"
    out = t.save(tmp_path / "out.tax")
    assert out.read_bytes() == p.read_bytes()


def test_a_bang_inside_a_word_or_a_name_is_no_mark():
    t = Taxonomy.parse('ROOT\n  Yahoo!\n  c "x !exclusive"\n  d!e\n')
    assert t.nodes == ["Yahoo!", "c", "d!e"]
    assert t.name("c") == "x !exclusive" and not any(t.is_exclusive(n) for n in t.graph)
    assert Taxonomy.parse(t.set_exclusive("Yahoo!").dumps()).is_exclusive("Yahoo!")


@pytest.mark.parametrize("text, line, words", [
    ('ROOT\n  a !exclusive "name"\n', 2, "misplaced !exclusive"),
    ("ROOT\n  a !exclusive !exclusive\n", 2, "misplaced !exclusive"),
    ("ROOT\n  a\n  b\n    &a !exclusive\n", 4, "takes no !exclusive mark"),
    ("ROOT\n  a !Exclusive\n    b\n    c\n", 2, "unknown mark '!Exclusive'"),
    ("ROOT\n  a !only\n    b\n", 2, "unknown mark '!only'"),
    ("ROOT\n  b !exclusives\n", 2, "unknown mark '!exclusives'"),
    ("ROOT !EXCLUSIVE\n  a\n", 1, "unknown mark '!EXCLUSIVE'"),
    ("ROOT\n  animal!exclusive\n    b\n    c\n", 2, "misplaced !exclusive"),
    ("ROOT\n  animal!Exclusive\n", 2, "misplaced !Exclusive"),
    ("ROOT\n  a\n    !exclusive\n    c\n", 3, "misplaced !exclusive"),
    ("ROOT\n  a\n    !only\n", 3, "misplaced !only"),
])
def test_bad_marks_name_file_and_line(tmp_path, text, line, words):
    p = write(tmp_path, text)
    with pytest.raises(TaxonomyError) as e:
        Taxonomy.load(p)
    assert e.value.line == line and f"{p}:{line}:" in str(e.value) and words in str(e.value)


@pytest.mark.parametrize("node", ["c !exclusive", "c !only", "!c", "c!exclusive", "c\td"])
def test_an_id_that_would_read_back_as_a_mark_is_refused(node):
    with pytest.raises(TaxonomyError, match="would read back as the !exclusive mark or another"):
        Taxonomy.parse(MARKED).add(node)


def test_validate_refuses_a_mark_on_a_leaf_that_edits_and_training_take(tmp_path):
    p = write(tmp_path, "ROOT\n  a\n    b !exclusive\n  c\n")
    r = cli("taxonomy", "validate", p)
    assert isinstance(r.exception, TaxonomyError) and r.exception.line == 3
    assert str(r.exception).startswith(f"{p}:3: !exclusive on a leaf") and "'b' has none" in str(r.exception)
    assert Taxonomy.load(p).is_exclusive("b")                  # loading for use takes it: it forms no group
    q = write(tmp_path, "ROOT\n  a\n", "q.tax")
    assert cli("taxonomy", "add", q, "b", "--parent", "a", "--exclusive").exit_code == 0
    assert cli("taxonomy", "add", q, "b1", "--parent", "b").exit_code == 0      # the marked leaf takes children
    assert cli("taxonomy", "validate", q).exit_code == 0


# ---- compiled index ----------------------------------------------------------------------
def test_compiled_groups():
    idx = Taxonomy.parse(MARKED).compile()
    col = idx.id_to_index
    assert idx.n_groups == 3
    assert idx.exclusive_parent.tolist() == [-1, col["a"], col["b-1"]]
    kids = [[idx.ids[c] for c in row if c >= 0] for row in idx.exclusive_children]
    assert kids == [["a", "b"], ["a-1", "a-2", "a-3"], ["b-1-x", "b-1-y"]]


def test_marks_leave_the_other_arrays_alone_and_no_marks_means_no_groups():
    marked, plain = Taxonomy.parse(MARKED).compile(), Taxonomy.parse(MARKED.replace(" !exclusive", "")).compile()
    for name in ("levels", "parent_ptr", "parent_idx", "parents_padded", "leaf_mask", "ancestors"):
        assert np.array_equal(getattr(marked, name), getattr(plain, name))
    assert marked.ids == plain.ids and plain.n_groups == 0 and plain.exclusive_children.shape == (0, 1)
    assert exclusive_loss(plain) is None
    # a mark on a node with fewer than two children is no group
    assert Taxonomy.parse("ROOT\n  a !exclusive\n    a1\n  b !exclusive\n").compile().n_groups == 0


def test_compile_cache_follows_the_mark():
    t = Taxonomy.parse(MARKED)
    assert t.compile().n_groups == 3
    t.graph.nodes["b-1"].pop("exclusive")
    assert t.compile().n_groups == 2


# ---- edits ------------------------------------------------------------------------------
def test_edits_keep_the_marks():
    t = Taxonomy.parse(MARKED)
    assert t.add("c", "a").is_exclusive("a") and t.add("c", exclusive=True).is_exclusive("c")
    r = t.rename("a", "A", name="Ay")
    assert r.is_exclusive("A") and r.is_exclusive("ROOT") and "A \"Ay\" !exclusive" in r.dumps()
    assert t.rename("ROOT", "TOP").is_exclusive("TOP")
    assert t.remove("a-1").is_exclusive("a")
    up = t.remove("b-1", "reparent")
    assert up.children("b") == ["b-1-x", "b-1-y", "a-2"] and not up.is_exclusive("b") and up.is_exclusive("a")
    assert t.remove("b", "subtree").is_exclusive("a")
    assert t.move("b-1", "a").is_exclusive("b-1")
    assert not t.set_exclusive(["a", "ROOT"], False).is_exclusive("a")
    for edited in (r, up, t.move("b-1", "a")):
        assert Taxonomy.parse(edited.dumps()).dumps() == edited.dumps()


def test_merge_keeps_the_mark_only_when_both_sides_claim_it():
    t = Taxonomy.parse(MARKED)
    both = t.merge("b-1", "a")                                # both marked: the union is exclusive
    assert both.is_exclusive("a") and both.children("a") == ["a-1", "a-2", "a-3", "b-1-x", "b-1-y"]
    assert not t.set_exclusive("b-1", False).merge("b-1", "a").is_exclusive("a")
    assert not t.merge("b", "a").is_exclusive("a")            # b's children were never claimed exclusive
    assert t.merge("a-1", "a-3").is_exclusive("a")            # leaves: nothing claimed, a's group stays
    assert t.set_exclusive("a-3").merge("a-1", "a-3").is_exclusive("a-3")


def test_diff_reports_a_changed_mark():
    t = Taxonomy.parse(MARKED)
    assert t.diff(t.set_exclusive(["ROOT", "a"], False).set_exclusive("b")) == [
        "~ ROOT: exclusive on -> off", "~ a: exclusive on -> off", "~ b: exclusive off -> on"]
    assert t.diff(t.rename("a", name="Alpha")) == []


@pytest.mark.parametrize("args, node", [
    (["add", "c", "--parent", "a"], "a"),
    (["add", "c", "--exclusive"], "c"),
    (["remove", "a-1"], "a"),
    (["remove", "b", "--reparent"], "b-1"),
    (["rename", "a", "A"], "A"),
    (["move", "b-1", "a"], "b-1"),
    (["merge", "a-1", "a-3"], "a"),
    (["exclusive", "b"], "b"),
])
def test_cli_edits_keep_the_marks(tmp_path, args, node):
    p = write(tmp_path, MARKED)
    r = cli("taxonomy", args[0], p, *args[1:])
    assert r.exit_code == 0, r.output
    t = Taxonomy.load(p)
    assert t.is_exclusive(node) and t.is_exclusive("ROOT")
    assert t.dumps().encode("utf-8") == p.read_bytes()


def test_cli_show_stats_diff_exclusive_off_and_merge_note(tmp_path):
    p = write(tmp_path, MARKED)
    r = cli("taxonomy", "show", p)
    assert r.exit_code == 0 and "ROOT !exclusive" in r.stdout and "Alpha (3) !exclusive" in r.stdout
    assert "3 exclusive groups" in r.stdout
    assert json.loads(cli("taxonomy", "stats", p, "--json").stdout)["exclusive_groups"] == 3
    q = write(tmp_path, MARKED, "q.tax")
    assert cli("taxonomy", "exclusive", q, "ROOT", "a", "--off").exit_code == 0
    r = cli("taxonomy", "diff", p, q)
    assert r.exit_code == 1 and "~ ROOT: exclusive on -> off" in r.stdout and "~ a: exclusive on -> off" in r.stdout
    r = cli("taxonomy", "merge", p, "b", "a")
    assert r.exit_code == 0 and "a no longer !exclusive" in r.stdout
    with pytest.raises(TaxonomyError, match="unknown node 'ghost'"):
        runner.invoke(app, ["taxonomy", "exclusive", str(p), "ghost"], catch_exceptions=False)


# ---- from-labels ------------------------------------------------------------------------
def jsonl(tmp_path: Path, label_sets: list[list[str]]) -> Path:
    p = tmp_path / "labels.jsonl"
    p.write_text("".join(json.dumps({"text": f"t{i}", "labels": ls}) + "\n" for i, ls in enumerate(label_sets)),
                 encoding="utf-8")
    return p


def test_from_labels_says_single_path_and_marks_with_exclusive(tmp_path):
    src = jsonl(tmp_path, [["x.a"], ["x.b"], ["y.c.d"], ["y"]])
    r = cli("taxonomy", "from-labels", src, "--format", "jsonl", "--sep", ".")
    assert r.exit_code == 0 and "single-path: each of the 4 samples" in r.stderr
    assert "!exclusive" not in r.stdout
    out = tmp_path / "out.tax"
    r = cli("taxonomy", "from-labels", src, "--format", "jsonl", "--sep", ".", "--exclusive", "-o", out)
    assert r.exit_code == 0, r.output
    t = Taxonomy.load(out)
    assert sorted(n for n in t.graph if t.is_exclusive(n)) == ["ROOT", "x", "y", "y.c"]
    assert t.compile().n_groups == 2                       # ROOT: x, y; x: x.a, x.b (y and y.c have one child)


def test_from_labels_says_when_data_is_not_single_path(tmp_path):
    src = jsonl(tmp_path, [["x.a"], ["x.a", "x.b"], ["x.a", "y"]])
    r = cli("taxonomy", "from-labels", src, "--format", "jsonl", "--sep", ".", "--exclusive")
    assert r.exit_code == 0
    assert "not single-path: 2 of 3 samples" in r.stderr and "(sample 2: x.a, x.b)" in r.stderr
    assert "marks the groups anyway" in r.stderr
    assert Taxonomy.parse(r.stdout).is_exclusive("x")


def test_from_labels_on_the_tiny_dataset_card(tiny_dataset, tmp_path):
    card = tmp_path / "card.toml"
    card.write_text(tiny_dataset.read_text(encoding="utf-8").replace('taxonomy = "tiny.tax"', "")
                    .replace("[splits]", '[taxonomy_from]\nsep = "-"\n\n[splits]')
                    .replace('"train.jsonl"', f'"{tiny_dataset.parent / "train.jsonl"}"')
                    .replace('"test.jsonl"', f'"{tiny_dataset.parent / "test.jsonl"}"'), encoding="utf-8")
    r = cli("taxonomy", "from-labels", card, "--exclusive")
    assert r.exit_code == 0, r.output
    assert "not single-path" in r.stderr                    # a quarter of the texts have two leaves
    assert Taxonomy.parse(r.stdout).compile().n_groups == 3


# ---- the group loss -----------------------------------------------------------------------
def test_exclusive_loss_is_softmax_cross_entropy_by_hand():
    groups = np.array([[0, 1, 2], [3, 4, -1]])
    z = torch.tensor([[1.0, 2.0, 0.5, -1.0, 3.0],
                      [0.0, 0.0, 0.0, 2.0, 1.0],
                      [4.0, -2.0, 1.0, 0.3, 0.7]])
    y = torch.tensor([[0, 1, 0, 0, 0],            # group 0: child 1; group 1: none
                      [1, 0, 1, 0, 1],            # group 0: children 0 and 2 (uniform target); group 1: child 4
                      [0, 0, 0, 0, 0]])           # nothing: adds 0
    lse = lambda *v: math.log(sum(math.exp(x) for x in v))
    hand = [lse(1, 2, 0.5) - 2,
            lse(0, 0, 0) - 0 + lse(2, 1) - 1,
            0.0]
    loss = ExclusiveLoss(groups)
    assert loss(z, y).item() == pytest.approx(sum(hand) / 3, rel=1e-6)
    assert loss(z[2:], y[2:]).item() == 0.0
    zg = z.clone().requires_grad_()
    loss(zg, y).backward()
    assert torch.isfinite(zg.grad).all() and torch.all(zg.grad[2] == 0)
    # the softmax ignores a shift of one group's logits
    shifted = z.clone()
    shifted[:, :3] += 5.0
    assert loss(shifted, y).item() == pytest.approx(loss(z, y).item(), rel=1e-6)


class StubEncoder(nn.Module):
    """Only what the heads read: the hidden size (the models are fed random token states)."""

    hidden_size = 8


TINY_MARKED = TAXONOMY.replace("ROOT\n", "ROOT !exclusive\n").replace("  animal\n", "  animal !exclusive\n")


@pytest.mark.parametrize("name, options", [
    ("msml", {"filters": 4, "tower_dim": 8, "dropout": 0.0}),
    ("msml", {"filters": 4, "tower_dim": 8, "dropout": 0.0, "constrained": True}),
    ("msml", {"filters": 4, "tower_dim": 8, "dropout": 0.0, "conditional": True, "loss": "bce"}),
    ("global", {"dropout": 0.0, "loss": "bce"}),
    ("flat", {"dropout": 0.0}),
    ("local", {"dropout": 0.0}),
])
def test_every_model_adds_the_group_loss_to_its_own(name, options):
    plain, marked = Taxonomy.parse(TAXONOMY).compile(), Taxonomy.parse(TINY_MARKED).compile()
    cls = {"msml": MSMLModel, "global": GlobalModel, "flat": FlatModel, "local": LocalModel}[name]
    models = []
    for index in (plain, marked):
        torch.manual_seed(0)
        models.append(cls(StubEncoder(), index, make_config(name, options)))
    g = torch.Generator().manual_seed(1)
    h, mask = torch.randn(5, 3, 8, generator=g), torch.ones(5, 3, dtype=torch.long)
    labels = torch.as_tensor(plain.indicator([["animal-cat"], ["plant-tree"], ["animal-cat", "animal-dog"],
                                              ["animal"], []]), dtype=torch.float32)
    out_plain, out_marked = (m.forward_states(h, mask, labels) for m in models)
    assert models[0].group_loss is None and torch.equal(out_plain.logits, out_marked.logits)
    if name == "local":           # the parent's own classifier rows: the edge logits
        m = models[1]
        z = m.classifier(m.dropout(m.head(h, mask))).float()
        edge = {(int(p), int(c)): e for e, (p, c) in enumerate(zip(m.edge_parent, m.edge_child))}
        n, col = marked.n_nodes, marked.id_to_index
        groups = np.array([[edge[n, col["animal"]], edge[n, col["plant"]]],
                           [edge[col["animal"], col["animal-cat"]], edge[col["animal"], col["animal-dog"]]]])
        extra = ExclusiveLoss(groups, marked.exclusive_children)(z, labels)
    elif options.get("constrained"):   # MCLoss's training output ẑʸ of the raw logits
        raw = torch.cat([z for _, z in models[0].level_states(h, mask)], -1).float()
        extra = ExclusiveLoss(marked.exclusive_children)(constrain(raw, models[0].under, labels), labels)
    elif options.get("conditional"):   # the conditional logits, before the path product
        raw = torch.cat([z for _, z in models[0].level_states(h, mask)], -1).float()
        extra = ExclusiveLoss(marked.exclusive_children)(raw, labels)
    else:                        # the node logits (flat: internal nodes as the max over their leaves)
        extra = ExclusiveLoss(marked.exclusive_children)(out_plain.logits, labels)
    assert extra.item() > 0
    assert out_marked.loss.item() == pytest.approx(out_plain.loss.item() + extra.item(), rel=1e-5)


@pytest.mark.parametrize("model, options", [
    ("msml", None),
    ("flat", {"dropout": 0.0}),
])
def test_tiny_models_train_an_epoch_on_an_exclusive_taxonomy(run_config, tiny_dataset, tmp_path, model, options):
    data = tmp_path / "single-path"         # the data kept to one leaf per text: the marks below hold
    data.mkdir()
    for split in ("train", "test"):
        rows = [json.loads(line) for line in (tiny_dataset.parent / f"{split}.jsonl").read_text().splitlines()]
        (data / f"{split}.jsonl").write_text("".join(json.dumps({**r, "labels": r["labels"][:1]}) + "\n"
                                                     for r in rows), encoding="utf-8")
    (data / "tiny.toml").write_text(tiny_dataset.read_text(encoding="utf-8"), encoding="utf-8")
    tax = data / "tiny.tax"
    tax.write_text((tiny_dataset.parent / "tiny.tax").read_text(encoding="utf-8")
                   .replace("ROOT\n", "ROOT !exclusive\n").replace("  animal\n", "  animal !exclusive\n")
                   .replace("  plant\n", "  plant !exclusive\n"), encoding="utf-8")
    cfg = load_config(run_config, ["train.epochs=1", "train.record_dir=''", f"data.dataset='{data / 'tiny.toml'}'",
                                   f"model.name={model}"])
    if options is not None:
        cfg = replace(cfg, model=replace(cfg.model, options=options))       # msml's options replaced, not merged into
    trainer = Trainer(cfg, tmp_path / model, quiet=True)
    trainer.fit()
    assert trainer.data_.index.n_groups == 3
    assert trainer.state_.step > 0 and all(np.isfinite(h["train_loss"]) for h in trainer.state_.history)
    ckpt = load_checkpoint(tmp_path / model / "last")
    assert ckpt.index.n_groups == 3 and (tmp_path / model / "last" / "taxonomy.tax").read_text(
        encoding="utf-8").count("!exclusive") == 3
    scores = ckpt.scores(trainer.data_.texts["test"])
    keep = decode(scores, ckpt.index, "best", 0.0, complete=True)
    assert (group_sizes(keep, ckpt.index) <= 1).all()


# ---- decoding -----------------------------------------------------------------------------
@st.composite
def marked_taxonomies(draw, dag: bool):
    """A random taxonomy (tests/test_decode.py) with random exclusive marks, the root's included."""
    t = draw(taxonomies(dag))
    nodes = [t.root, *t.nodes]
    marks = draw(st.lists(st.sampled_from(nodes), unique=True, max_size=len(nodes)))
    return t.set_exclusive(marks) if marks else t


def assert_consistent(keep: np.ndarray, index) -> None:
    assert not np.asarray(orphan_mask(keep, index, "strict")).any()


@settings(max_examples=80, deadline=None)
@given(data=st.data(), dag=st.booleans(), method=st.sampled_from(["best", "top-down", "closure"]),
       single=st.booleans(), per_label=st.booleans(), at_least_one=st.booleans(), complete=st.booleans())
def test_decoding_never_keeps_two_children_of_a_group(data, dag, method, single, per_label, at_least_one,
                                                      complete):
    tax = data.draw(marked_taxonomies(dag))
    index = tax.compile()
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    scores = rng.normal(0, 3, size=(20, index.n_nodes)).astype(np.float32)
    thr = rng.normal(0, 1, size=index.n_nodes) if per_label else float(rng.normal())
    keep = decode(scores, index, method, thr, single_path=single and method == "best",
                  at_least_one=at_least_one, complete=complete)
    assert keep.shape == scores.shape and keep.dtype == bool
    assert_consistent(keep, index)
    assert (group_sizes(keep, index) <= 1).all()
    if complete and not dag:      # a tree: every kept internal node keeps a child, down to a leaf
        assert not stops_early(keep, index).any()
    # top-down and closure: what the method keeps without the marks, less the groups' losers
    # (best decides by its margins instead, and completion adds children afterwards)
    if method != "best" and not complete and not at_least_one:
        raw = decode(scores, tax.set_exclusive(list(tax.graph), False).compile(), method, thr)
        assert np.array_equal(keep, keep_one_per_group(raw, scores, index))
        if not dag:               # a tree: each group keeps exactly its best kept child, under a kept parent
            for r, g in itertools.product(range(len(raw)), range(index.n_groups)):
                kids, p = [c for c in index.exclusive_children[g] if c >= 0], index.exclusive_parent[g]
                kept = [c for c in kids if raw[r, c]]
                want = [max(kept, key=lambda c: (scores[r, c], -c))] if kept and (p < 0 or keep[r, p]) else []
                assert [c for c in kids if keep[r, c]] == want


@pytest.mark.parametrize("stops", [False, True])
def test_auto_completion_follows_the_training_labels(tiny_dataset, tmp_path, stops):
    """``decode.complete = "auto"`` is on when every training label set reaches a leaf, off when
    one stops at an internal node; a setting of true or false is taken as it is."""
    from hmtc.data.prepare import prepare, taxonomy_for
    from hmtc.testing import tiny_tfidf_config_text
    data = tiny_dataset.parent
    if stops:                    # a copy of the data whose first training text is labelled "animal" only
        copy = tmp_path / "data"
        copy.mkdir()
        for f in data.iterdir():
            (copy / f.name).write_bytes(f.read_bytes())
        rows = (copy / "train.jsonl").read_text(encoding="utf-8").splitlines()
        rows[0] = json.dumps({"text": json.loads(rows[0])["text"], "labels": ["animal"]})
        (copy / "train.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
        data = copy
    cfg_file = tmp_path / "tfidf.toml"
    cfg_file.write_text(tiny_tfidf_config_text(data / tiny_dataset.name, tmp_path), encoding="utf-8")
    for setting, want in (("'auto'", not stops), ("true", True), ("false", False)):
        cfg = load_config(cfg_file, [f"decode.complete={setting}"])
        assert prepare(cfg, taxonomy_for(cfg)).decoding.complete is want


def test_group_pruning_drops_the_subtrees_of_the_losers():
    tax = Taxonomy.parse("ROOT !exclusive\n  a\n    a1\n  b\n    b1\n  c\n")
    index = tax.compile()
    col = index.id_to_index
    s = np.full((1, index.n_nodes), 1.0, dtype=np.float32)
    s[0, col["b"]] = 2.0
    keep = decode(s, index, "top-down", 0.0)
    assert index.labels_of(keep) == [["b", "b1"]]


def test_best_is_the_max_margin_set_with_one_child_per_group_on_small_trees():
    tax = Taxonomy.parse("ROOT !exclusive\n  a !exclusive\n    a1\n    a2\n    a3\n  b\n    b1 !exclusive\n"
                         "      b1x\n      b1y\n    b2\n")
    index = tax.compile()
    scores = np.random.default_rng(0).normal(0, 2, size=(300, index.n_nodes)).astype(np.float32)
    keep = decode(scores, index, "best", 0.0)
    sets = np.array(list(itertools.product([0, 1], repeat=index.n_nodes)), dtype=bool)
    ok = ~np.asarray(orphan_mask(sets, index)).any(1) & (group_sizes(sets, index) <= 1).all(1)
    best_total = (scores @ sets[ok].T.astype(np.float32)).max(1)
    assert np.allclose((scores * keep).sum(1), best_total, atol=1e-5)


@settings(max_examples=30, deadline=None)
@given(data=st.data(), dag=st.booleans(), method=st.sampled_from(["best", "top-down", "closure"]))
def test_marks_that_form_no_group_change_no_decoding(data, dag, method):
    tax = data.draw(taxonomies(dag))
    small = [n for n in tax.graph if tax.graph.out_degree(n) < 2]
    marked = tax.set_exclusive(small)
    assert marked.compile().n_groups == 0
    scores = np.random.default_rng(data.draw(st.integers(0, 2**16))).normal(0, 3, (10, len(tax))).astype(np.float32)
    assert np.array_equal(decode(scores, tax.compile(), method, 0.0, complete=True),
                          decode(scores, marked.compile(), method, 0.0, complete=True))
