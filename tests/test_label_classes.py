"""Per-label classes (docs/label-classes.md): ``label:class`` labels read and checked against the
taxonomy's exclusive class groups, absent labels in their first class, one softmax per label in
training, per-label class metrics equal to scikit-learn's, and ``classes`` in predict's rows."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from sklearn import metrics as skm
from typer.testing import CliRunner

import hmtc.label_classes as LC
import hmtc.metrics as M
from hmtc.loading import load_checkpoint
from hmtc.cli import app, main
from hmtc.data import encode_labels, read_jsonl, read_table
from hmtc.errors import DataError
from hmtc.losses import exclusive_loss
from hmtc.predict import predict_rows
from hmtc.taxonomy import Taxonomy
from hmtc.testing import INTENSITIES, LABEL_CLASS_TAXONOMY, label_class_dataset, tiny_config_text

# classes in declared order (not sorted); a label id holding ":" itself; a nested label; Chinese
TAX = """# emotions with intensities, and a plain branch
ROOT
  喜 "joy" !exclusive
    喜:none "none"
    喜:weak "weak"
    喜:strong "strong"
  怒 !exclusive
    怒:0
    怒:1
    怒:2
    怒:3
  aspect
    aspect:food !exclusive
      aspect:food:neg
      aspect:food:pos
  topic
    topic-a
    topic-b
"""
runner = CliRunner()


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def tax(tmp_path) -> Taxonomy:
    return Taxonomy.load(write(tmp_path / "emo.tax", TAX))


# ---- the taxonomy ---------------------------------------------------------------------------
def test_classes_are_exclusive_groups_that_round_trip(tax, tmp_path):
    assert tax.dumps() == TAX                                   # ':' is an ordinary id character
    tax.save(tmp_path / "again.tax")
    assert (tmp_path / "again.tax").read_text(encoding="utf-8") == TAX
    index = tax.compile()
    lc = LC.label_classes(index)
    assert lc.labels == ("喜", "怒", "aspect:food")
    assert lc.classes == (("none", "weak", "strong"), ("0", "1", "2", "3"), ("neg", "pos"))
    assert lc.n_classes.tolist() == [3, 4, 2]
    for lab, names, cols in zip(lc.labels, lc.classes, lc.class_cols):
        assert [index.ids[c] for c in cols if c >= 0] == [f"{lab}:{n}" for n in names]
    assert [index.ids[c] for c in lc.label_cols] == list(lc.labels)
    assert LC.label_classes(Taxonomy.parse(LABEL_CLASS_TAXONOMY).compile()).classes == (INTENSITIES,) * 4


@pytest.mark.parametrize("text, miss", [
    ("ROOT\n  joy\n    joy:a\n    joy:b\n", "joy"),                          # no mark
    ("ROOT\n  joy !exclusive\n    joy:a\n    other\n", "joy"),              # a child not named joy:<class>
    ("ROOT\n  joy !exclusive\n    joy:a\n    joy:b\n      deeper\n", "joy"),  # a class that is no leaf
    ("ROOT\n  joy !exclusive\n    joy:a\n    joy:b\n  x\n    &joy:b\n", "joy"),  # a class with two parents
])
def test_near_misses_are_no_labels_with_classes_and_validate_says_so(tmp_path, text, miss):
    p = write(tmp_path / "miss.tax", text)
    assert not len(LC.label_classes(Taxonomy.load(p).compile()))
    r = cli("taxonomy", "validate", p)
    assert r.exit_code == 0 and "note" in r.stdout and repr(miss) in r.stdout
    ok = write(tmp_path / "ok.tax", TAX)
    r = cli("taxonomy", "validate", ok)
    assert "3 labels with classes" in " ".join(r.stdout.split()) and "note" not in r.stdout
    assert "3 labels with classes" in " ".join(cli("taxonomy", "show", ok).stdout.split())


# ---- reading ----------------------------------------------------------------------------------
def test_labels_with_classes_read_and_absent_ones_are_in_their_first_class(tax, tmp_path):
    f = write(tmp_path / "d.jsonl", '{"text": "a", "labels": ["喜:weak", "topic-a"]}\n'
                                    '{"text": "b", "labels": ["怒:3", "喜:none"]}\n'
                                    '{"text": "c", "labels": "aspect:food:pos"}\n')
    index = tax.compile()
    y = encode_labels(read_jsonl(f), index)
    assert [sorted(s) for s in index.labels_of(y)] == [
        sorted(["喜", "喜:weak", "怒", "怒:0", "aspect", "aspect:food", "aspect:food:neg", "topic", "topic-a"]),
        sorted(["喜", "喜:none", "怒", "怒:3", "aspect", "aspect:food", "aspect:food:neg"]),
        sorted(["喜", "喜:none", "怒", "怒:0", "aspect", "aspect:food", "aspect:food:pos"])]
    lc = LC.label_classes(index)
    assert LC.class_indices(y, lc).tolist() == [[1, 0, 0], [0, 3, 0], [0, 0, 1]]
    # a taxonomy without classes reads as before: nothing is added
    plain = Taxonomy.parse("ROOT\n  a\n    a-1\n  b\n").compile()
    got = encode_labels(read_jsonl(write(tmp_path / "p.jsonl", '{"text": "x", "labels": ["a-1"]}\n')), plain)
    assert plain.labels_of(got) == [["a", "a-1"]]


BAD = [
    ('["喜"]', "label '喜' takes a class: write 喜:<class>, one of none, weak, strong", "label without a class"),
    ('["喜:medium"]', "unknown class 'medium' of label '喜'; its classes: none, weak, strong", "unknown class"),
    ('["aspect:food:meh"]', "unknown class 'meh' of label 'aspect:food'", "unknown class"),
    ('["喜:weak", "喜:strong"]', "two classes of label '喜' ('喜:weak', '喜:strong')", "two classes of one label"),
]


@pytest.mark.parametrize("labels, message, reason", BAD)
def test_bad_classes_in_jsonl_name_file_and_line(tax, tmp_path, labels, message, reason):
    f = write(tmp_path / "d.jsonl", '{"text": "ok", "labels": ["喜:weak"]}\n\n'
                                    f'{{"text": "bad", "labels": {labels}}}\n')
    with pytest.raises(DataError) as e:
        encode_labels(read_jsonl(f), tax)
    assert str(e.value).startswith(f"{f}:3: {message}") and "\n" not in str(e.value)
    ex = read_jsonl(f)
    y = encode_labels(ex, tax, on_error="skip")
    assert ex.skipped_reasons[reason] == 1 and len(y) == 2


@pytest.mark.parametrize("delimiter, suffix", [("\t", "tsv"), (",", "csv")])
@pytest.mark.parametrize("labels, message, reason", BAD)
def test_bad_classes_in_tables_name_file_and_line(tax, tmp_path, delimiter, suffix, labels, message, reason):
    tags = ";".join(json.loads(labels))
    f = write(tmp_path / f"d.{suffix}", f"text{delimiter}tags\nfine{delimiter}怒:1;喜:weak\n"
                                        f"bad{delimiter}{tags}\n")
    ex = read_table(f, "text", "tags", label_sep=";", delimiter=delimiter, header=True)
    with pytest.raises(DataError) as e:
        encode_labels(ex, tax)
    assert str(e.value).startswith(f"{f}:3: {message}")


def test_table_label_names_map_the_label_and_keep_the_class(tax, tmp_path):
    names = write(tmp_path / "names.txt", "喜\n怒\n")
    f = write(tmp_path / "d.tsv", "text one\t1:2,0:weak\n")
    ex = read_table(f, 0, 1, label_names=names)
    assert ex.labels == [["怒:2", "喜:weak"]]
    assert LC.class_indices(encode_labels(ex, tax), LC.label_classes(tax.compile()))[0, :2].tolist() == [1, 2]


def test_a_bad_class_is_one_error_line_from_the_cli(tmp_path, capsys, monkeypatch):
    card = label_class_dataset(tmp_path / "data")
    with open(tmp_path / "data" / "train.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"text": "cat", "labels": ["cat:furious"]}\n')
    monkeypatch.setattr(sys, "argv", ["hmtc", "data", "stats", str(card)])
    with pytest.raises(SystemExit) as e:
        main()                                   # the real entry point: user errors exit 2
    assert e.value.code == 2
    assert capsys.readouterr().err.strip() == (f"error: {tmp_path / 'data' / 'train.jsonl'}:97: unknown class "
                                               "'furious' of label 'cat'; its classes: none, weak, medium, strong")


# ---- metrics ------------------------------------------------------------------------------------
def random_classes(seed: int, n: int = 200):
    rng = np.random.default_rng(seed)
    k = rng.integers(2, 7, size=5)
    t = np.stack([rng.integers(0, kk, n) for kk in k], 1)
    p = np.where(rng.random(t.shape) < 0.6, t, np.stack([rng.integers(0, kk, n) for kk in k], 1))
    t[:, 0] = np.minimum(t[:, 0], k[0] - 2)              # label 0: its last class in neither set
    p[:, 0] = np.minimum(p[:, 0], k[0] - 2)
    return t, p, k


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_per_label_class_metrics_equal_sklearn(seed):
    t, p, k = random_classes(seed)
    for zd, labels in ((0.0, True), (np.nan, False)):       # every class counted, or those seen
        s = M.label_class_scores(t, p, k, zero_division=zd)
        for lab in range(len(k)):
            ref_f1 = skm.f1_score(t[:, lab], p[:, lab], average="macro", zero_division=0.0,
                                  labels=list(range(k[lab])) if labels else None)
            assert s["macro_f1"][lab] == pytest.approx(ref_f1, abs=1e-12)
            assert s["accuracy"][lab] == pytest.approx(skm.accuracy_score(t[:, lab], p[:, lab]), abs=1e-12)
            assert s["rmse"][lab] == pytest.approx(skm.mean_squared_error(t[:, lab], p[:, lab]) ** 0.5, abs=1e-12)
            assert s["support"][lab, : k[lab]].tolist() == np.bincount(t[:, lab], minlength=k[lab]).tolist()
        assert s["mean_accuracy"] == pytest.approx(s["accuracy"].mean())
        assert s["mean_macro_f1"] == pytest.approx(s["macro_f1"].mean())
        assert s["mean_rmse"] == pytest.approx(s["rmse"].mean())
    nominal = M.label_class_scores(t, p, k, ordinal=[True, False, True, True, True])
    assert np.isnan(nominal["rmse"][1]) and nominal["mean_rmse"] == pytest.approx(np.delete(nominal["rmse"], 1).mean())


def test_a_prediction_with_two_classes_names_none():
    t = np.array([[0], [1], [2], [2]])
    p = np.array([[0], [-1], [2], [-1]])                  # -1: two classes kept, undecoded
    s = M.label_class_scores(t, p, [3])
    assert s["accuracy"][0] == 0.5
    # F1 as sklearn's with the classes named: -1 is a miss of the gold class, no class's false positive
    assert s["macro_f1"][0] == pytest.approx(skm.f1_score(t[:, 0], p[:, 0], average="macro", labels=[0, 1, 2]))
    assert s["rmse"][0] == pytest.approx(np.sqrt((0 + 1 + 0 + 4) / 4))     # as far off as the farthest class
    with pytest.raises(ValueError, match="out of range"):
        M.label_class_scores(t, t + 1, [3])


def test_class_indices_and_absent_classes_dense_and_sparse(tax):
    index = tax.compile()
    lc = LC.label_classes(index)
    y = index.indicator([["喜:strong"], ["怒:2", "aspect:food:neg"], [], ["topic-b"]])
    y[3, index.id_to_index["喜:weak"]] = y[3, index.id_to_index["喜:none"]] = True   # two kept
    assert LC.class_indices(y, lc).tolist() == [[2, 0, 0], [0, 2, 0], [0, 0, 0], [-1, 0, 0]]
    assert LC.class_indices(sp.csr_array(y), lc).tolist() == LC.class_indices(y, lc).tolist()
    filled = LC.with_absent_classes(y, index)
    assert (filled[:, lc.label_cols]).all()
    assert np.array_equal(LC.with_absent_classes(sp.csr_array(y), index).toarray(), filled)
    assert index.labels_of(filled[2:3])[0] == ["喜", "怒", "aspect", "喜:none", "怒:0", "aspect:food", "aspect:food:neg"]
    assert LC.class_indices(filled, lc).tolist() == LC.class_indices(y, lc).tolist()    # absent = first class


def test_evaluate_adds_label_classes_only_for_such_taxonomies(tax):
    index = tax.compile()
    gold = LC.with_absent_classes(index.indicator([["喜:strong", "怒:1"], ["怒:3"], ["aspect:food:pos"]]), index)
    pred = index.indicator([["喜:strong", "怒:2"], ["喜:weak"], ["aspect:food:pos", "怒:0"]])
    res = M.evaluate(gold, pred, index)["label_classes"]
    assert res["n_labels"] == 3 and [r["id"] for r in res["per_label"]] == ["喜", "怒", "aspect:food"]
    joy, anger, food = res["per_label"]
    assert joy["name"] == "joy" and joy["classes"] == ["none", "weak", "strong"]
    assert joy["support"] == [2, 0, 1] and joy["predicted"] == [1, 1, 1] and joy["accuracy"] == pytest.approx(2 / 3)
    assert anger["rmse"] == pytest.approx(np.sqrt((1 + 9 + 0) / 3)) and food["accuracy"] == 1.0
    assert res["mean_accuracy"] == pytest.approx((2 / 3 + 1 / 3 + 1) / 3)
    plain = Taxonomy.parse("ROOT\n  a !exclusive\n    a-1\n    a-2\n").compile()
    assert "label_classes" not in M.evaluate(plain.indicator([["a-1"]]), plain.indicator([["a-2"]]), plain)


# ---- training and prediction ------------------------------------------------------------------
def test_the_group_loss_is_one_softmax_per_label(tax):
    """With absent labels in their first class every text has one class of every label, so the
    exclusive group loss is the sum over labels of a softmax cross-entropy over its classes."""
    index = tax.compile()
    lc = LC.label_classes(index)
    y = LC.with_absent_classes(index.indicator([["喜:weak"], ["怒:3", "aspect:food:pos"], ["topic-a"]]), index)
    z = torch.randn(3, index.n_nodes, generator=torch.Generator().manual_seed(0))
    cls = torch.as_tensor(LC.class_indices(y, lc))
    by_hand = sum(F.cross_entropy(z[:, torch.as_tensor(cols[cols >= 0])], cls[:, i], reduction="sum")
                  for i, cols in enumerate(lc.class_cols)) / 3
    assert len(lc) == index.n_groups
    assert exclusive_loss(index)(z, torch.as_tensor(y, dtype=torch.float32)).item() == pytest.approx(by_hand.item(), rel=1e-6)


def test_class_probabilities_from_path_logits_are_the_softmax_the_group_loss_trains():
    """Local and conditional MSML score path logits, logit(σ(z_l) σ(z_c)) for the class c of a
    level-1 label l; the classes' softmax is taken over the class logits z_c themselves."""
    from hmtc.models import MODELS
    from hmtc.predict import class_probabilities
    index = Taxonomy.parse(LABEL_CLASS_TAXONOMY).compile()
    lc = LC.label_classes(index)
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, size=(5, index.n_nodes))                          # each node's own logit
    log_sig = -np.logaddexp(0, -z)
    log_p = log_sig.copy()
    for label, col in zip(lc.labels, lc.label_cols):
        for c in lc.class_cols[lc.labels.index(label)]:
            log_p[:, c] = log_sig[:, c] + log_sig[:, col]                  # p(c) = P(c | l) p(l)
    path = (log_p - np.log(-np.expm1(log_p))).astype(np.float32)           # the path logits
    got = class_probabilities(path, lc, paths=True)
    for l, cols in enumerate(lc.class_cols):
        zc = z[:, cols]
        want = np.exp(zc - zc.max(1, keepdims=True))
        np.testing.assert_allclose(got[:, l], want / want.sum(1, keepdims=True), atol=2e-4)
    plain = class_probabilities(path, lc)                                  # read as own logits: not the same
    assert np.abs(plain - got).max() > 0.01
    assert MODELS.get("local").path_scores({}) and MODELS.get("msml").path_scores({"conditional": True})
    assert not any(MODELS.get(m).path_scores({}) for m in ("msml", "flat", "global", "tfidf"))


def test_tiny_msml_trains_and_predicts_one_class_per_label(tiny_encoder, tmp_path):
    card = label_class_dataset(tmp_path / "data")
    cfg = write(tmp_path / "classes.toml", tiny_config_text(card, tiny_encoder, tmp_path, "tiny-classes"))
    r = cli("train", cfg, "--quiet", "--set", "train.epochs=1")
    assert r.exit_code == 0, r.output
    run = tmp_path / "runs" / "tiny-classes"
    test = json.loads((run / "metrics.json").read_text(encoding="utf-8"))["test"]
    section = test["label_classes"]
    assert [r["id"] for r in section["per_label"]] == ["cat", "dog", "rose", "tree"]
    assert all(r["classes"] == list(INTENSITIES) and sum(r["support"]) == 32 for r in section["per_label"])
    for key in ("mean_accuracy", "mean_macro_f1", "mean_rmse"):
        assert section[key] is not None and np.isfinite(section[key])

    ckpt = load_checkpoint(run / "best")
    texts = [json.loads(line)["text"] for line in (tmp_path / "data" / "test.jsonl").read_text().splitlines()]
    rows, _ = predict_rows(ckpt, texts + [""])
    z = ckpt.scores(texts).astype(np.float64)
    ids = list(ckpt.index.ids)
    for row, zi in zip(rows[:-1], z):
        assert sorted(row["classes"]) == ["cat", "dog", "rose", "tree"]
        for label, got in row["classes"].items():
            assert got["class"] in INTENSITIES and list(got["probs"]) == list(INTENSITIES)
            node = f"{label}:{got['class']}"
            # the decoded set's class, or the first one where it keeps none of the label's
            assert node in row["labels"] or (got["class"] == "none" and not any(
                lab.startswith(label + ":") for lab in row["labels"]))
            # the label's softmax over its class logits, by hand
            zc = zi[[ids.index(f"{label}:{c}") for c in INTENSITIES]]
            by_hand = np.exp(zc - zc.max()) / np.exp(zc - zc.max()).sum()
            assert list(got["probs"].values()) == pytest.approx(by_hand, abs=6e-5)
            assert got["score"] == got["probs"][got["class"]]
    assert rows[-1]["classes"] == {} and rows[-1]["empty"] == "empty text"

    # the estimator and the server give the same classes
    from hmtc.estimator import HierarchicalClassifier
    clf = HierarchicalClassifier.load(run)
    assert clf.label_classes_ == {lab: list(INTENSITIES) for lab in ("cat", "dog", "rose", "tree")}
    assert clf.predict_classes(texts + [""]) == [{k: v["class"] for k, v in row["classes"].items()} for row in rows]
    proba = clf.predict_class_proba(texts)
    assert list(proba) == ["cat", "dog", "rose", "tree"]
    for label, p in proba.items():
        assert p.shape == (len(texts), len(INTENSITIES)) and np.allclose(p.sum(1), 1, atol=1e-5)
        assert [row["classes"][label]["probs"]["weak"] for row in rows[:-1]] == pytest.approx(p[:, 1], abs=6e-5)
    pytest.importorskip("fastapi")
    from hmtc.serve import Limits, create_app, load_served
    from test_serve import Server, request
    server = Server(create_app(load_served(run, threads=1), Limits()))
    try:
        status, out = request(server.url + "/predict", {"texts": texts[:4] + [""]})
    finally:
        server.stop()
    assert status == 200 and [p["classes"] for p in out["predictions"]] == [row["classes"] for row in rows[:4]] + [{}]

    # hmtc metrics on predict's output reads gold and predictions as the evaluation did
    pred = write(tmp_path / "pred.jsonl", "\n".join(json.dumps({"labels": row["labels"]}) for row in rows[:-1]) + "\n")
    r = cli("metrics", tmp_path / "data" / "test.jsonl", pred, "-t", tmp_path / "data" / "classes.tax", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["label_classes"] == section
    assert "Per-label classes" in cli("metrics", tmp_path / "data" / "test.jsonl", pred, "-t",
                                      tmp_path / "data" / "classes.tax").stdout
