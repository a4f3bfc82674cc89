import json

import numpy as np
import pytest
import scipy.sparse as sp
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm
from typer.testing import CliRunner

from hmtc import metrics as M
from hmtc.cli.metrics import metrics_command
from hmtc.errors import DataError
from hmtc.taxonomy import Taxonomy

TREE = """ROOT
  A
    A1
      A1x
    A2
  B
    B1
"""
DAG = """ROOT
  A
    C "shared"
  B
    &C
"""


@pytest.fixture(scope="module")
def tree():
    return Taxonomy.parse(TREE).compile()


@pytest.fixture(scope="module")
def dag():
    return Taxonomy.parse(DAG).compile()


@pytest.fixture(scope="module")
def big():
    """12 + 36 + 72 nodes over three levels, for random comparisons with sklearn."""
    paths = [f"{a}-{b}-{c}" for a in range(12) for b in range(3) for c in range(2)]
    return Taxonomy.from_paths(paths, "-").compile()


def rows(index, *sets):
    return index.indicator(sets, close=False)


def random_pair(index, seed):
    rng = np.random.default_rng(seed)
    n, N = 60, index.n_nodes
    t = rng.random((n, N)) < 0.08
    p = rng.random((n, N)) < 0.08
    t[:5], p[3:8] = False, False          # empty rows, on both sides and overlapping
    t[:, :4], p[:, 2:6] = False, False     # zero-support and never-predicted columns
    return t, p


# ---- (a) equal to sklearn ---------------------------------------------------------------------
SEEDS = [0, 1, 2, 3]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("zd", [0.0, 1.0, np.nan])
@pytest.mark.parametrize("average", ["micro", "macro", "samples", None])
def test_prf_matches_sklearn(big, seed, zd, average):
    t, p = random_pair(big, seed)
    ours = M.precision_recall_f1(t, p, average=average, zero_division=zd)
    ref = skm.precision_recall_fscore_support(t, p, average=average, zero_division=zd)
    for a, b in zip(ours, ref if average is None else ref[:3]):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("zd", [0.0, 1.0])
def test_per_level_and_leaf_match_sklearn_on_columns(big, seed, zd):
    t, p = random_pair(big, seed)
    res = M.evaluate(t, p, big, zero_division=zd)
    for row, sl in zip(res["per_level"], big.level_slices):
        for avg in ("micro", "macro"):
            ref = skm.precision_recall_fscore_support(t[:, sl], p[:, sl], average=avg,
                                                      zero_division=zd)[:3]
            got = [row[f"{avg}_{k}"] for k in ("precision", "recall", "f1")]
            np.testing.assert_allclose(got, ref, atol=1e-9)
        assert row["support"] == t[:, sl].sum() and row["n_labels"] == sl.stop - sl.start
    leaf = big.leaf_mask
    for avg in ("micro", "macro"):
        ref = skm.f1_score(t[:, leaf], p[:, leaf], average=avg, zero_division=zd)
        assert res[f"leaf_{avg}_f1"] == pytest.approx(ref, abs=1e-9)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("zd", [0.0, 1.0])
def test_sample_scores_match_sklearn(big, seed, zd):
    t, p = random_pair(big, seed)
    assert M.exact_match(t, p) == pytest.approx(skm.accuracy_score(t, p), abs=1e-9)
    assert M.hamming_loss(t, p) == pytest.approx(skm.hamming_loss(t, p), abs=1e-9)
    assert M.jaccard_samples(t, p, zero_division=zd) == pytest.approx(
        skm.jaccard_score(t, p, average="samples", zero_division=zd), abs=1e-9)
    np.testing.assert_array_equal(M.multilabel_confusion_matrix(t, p),
                                  skm.multilabel_confusion_matrix(t, p))
    res = M.evaluate(t, p, big, zero_division=zd)
    assert res["samples_f1"] == pytest.approx(
        skm.f1_score(t, p, average="samples", zero_division=zd), abs=1e-9)
    assert res["one_minus_hamming_loss"] == pytest.approx(1 - skm.hamming_loss(t, p), abs=1e-9)
    pr, rc, f1, sup = skm.precision_recall_fscore_support(t, p, average=None, zero_division=zd)
    pl = res["per_label"]
    np.testing.assert_allclose([r["f1"] for r in pl], f1, atol=1e-9)
    np.testing.assert_allclose([r["precision"] for r in pl], pr, atol=1e-9)
    assert [r["support"] for r in pl] == sup.tolist()
    assert [r["predicted"] for r in pl] == p.sum(0).tolist()
    assert [r["id"] for r in pl] == list(big.ids)


def test_nan_zero_division_is_json_null(big):
    t, p = random_pair(big, 0)
    res = M.evaluate(t, p, big, zero_division=np.nan)
    assert any(r["precision"] is None for r in res["per_label"])
    json.loads(json.dumps(res, allow_nan=False))


# ---- (b) hand-computed cases ------------------------------------------------------------------
def test_augment(tree, dag):
    y = rows(tree, ["A1x"], ["A2", "B"], [])
    aug = M.augment_ancestors(y, tree)
    assert tree.labels_of(aug) == [["A", "A1", "A1x"], ["A", "B", "A2"], []]
    np.testing.assert_array_equal(aug, tree.closure(y))
    assert dag.labels_of(M.augment_ancestors(rows(dag, ["C"]), dag)) == [["A", "B", "C"]]
    assert sp.issparse(M.augment_ancestors(sp.csr_matrix(y), tree))


def test_hierarchical_and_constrained_by_hand(tree):
    gold = tree.closure(rows(tree, ["A1x"], ["B1"]))           # {A,A1,A1x}, {B,B1}
    # Sample 1: A1x without its parent A1; sample 2: a wrong branch (A2).
    pred = rows(tree, ["A1x"], ["A2"])
    # Augmented pred {A,A1,A1x}, {A,A2}: overlap 3 + 0, |P^| = 5, |T^| = 5.
    assert M.hierarchical_prf(gold, pred, tree) == pytest.approx((0.6, 0.6, 0.6))
    pred = rows(tree, ["A1x", "A"], ["B", "B1", "A2"])
    # Correct paths: A (sample 1), B and B1 (sample 2); A1x is right but its parent is missing.
    c_micro, c_macro = M.constrained_f1(gold, pred, tree)
    assert c_micro == pytest.approx(2 * 3 / (5 + 5))
    assert c_macro == pytest.approx(3 / 6)                      # A, B, B1 score 1 of 6 labels
    res = M.evaluate(gold, pred, tree)
    assert res["micro_f1"] == pytest.approx(2 * 4 / 10) and res["macro_f1"] == pytest.approx(4 / 6)
    assert res["c_micro_precision"] == pytest.approx(3 / 5)
    assert res["inconsistent_samples"] == 1.0 and res["orphan_nodes"] == pytest.approx(2 / 5)
    assert (res["n_orphan_nodes"], res["n_predicted_nodes"]) == (2, 5)


def test_consistency_tree(tree):
    pred = rows(tree, ["A", "A1", "A1x"], ["A1x"], ["B1", "A"], [], ["A", "B"])
    mask = M.orphan_mask(pred, tree)
    assert tree.labels_of(mask) == [[], ["A1x"], ["B1"], [], []]
    assert M.orphan_mask(pred, tree, "lenient").tolist() == mask.tolist()
    c = M.consistency(pred, tree)
    assert c["inconsistent_samples"] == pytest.approx(2 / 5)
    assert c["orphan_nodes"] == pytest.approx(2 / 8)


def test_consistency_dag_strict_and_lenient(dag):
    pred = rows(dag, ["A", "B", "C"], ["A", "C"], ["C"], ["B"])
    strict = M.consistency(pred, dag)
    lenient = M.consistency(pred, dag, dag_mode="lenient")
    assert dag.labels_of(M.orphan_mask(pred, dag)) == [[], ["C"], ["C"], []]
    assert dag.labels_of(M.orphan_mask(pred, dag, "lenient")) == [[], [], ["C"], []]
    assert strict["inconsistent_samples"] == 0.5 and strict["orphan_nodes"] == pytest.approx(2 / 7)
    assert lenient["inconsistent_samples"] == 0.25 and lenient["orphan_nodes"] == pytest.approx(1 / 7)
    with pytest.raises(ValueError):
        M.consistency(pred, dag, dag_mode="loose")


def test_empty_predictions(tree):
    gold = tree.closure(rows(tree, ["A1"], ["B"]))
    res = M.evaluate(gold, np.zeros_like(gold), tree)
    assert res["micro_f1"] == 0.0 and res["hier_f1"] == 0.0 and res["orphan_nodes"] == 0.0
    assert res["hamming_loss"] == pytest.approx(3 / 12)


def test_bad_shapes(tree):
    with pytest.raises(ValueError):
        M.evaluate(np.zeros((2, 3)), np.zeros((2, 3)), tree)
    with pytest.raises(ValueError):
        M.precision_recall_f1(np.zeros((2, 6)), np.zeros((3, 6)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_brute_force_on_a_dag(seed):
    """Hierarchical, constrained and consistency figures against set-by-set loops."""
    index = _DAG
    rng = np.random.default_rng(seed)
    t = index.closure(rng.random((30, index.n_nodes)) < 0.2)
    p = rng.random((30, index.n_nodes)) < 0.3
    anc = [set(np.flatnonzero(index.ancestors[j])) for j in range(index.n_nodes)]
    par = [set(index.parent_idx[index.parent_ptr[j]:index.parent_ptr[j + 1]])
           for j in range(index.n_nodes)]
    T = [set(np.flatnonzero(r)) for r in t]
    P = [set(np.flatnonzero(r)) for r in p]
    aug = [[s | set().union(*(anc[j] for j in s)) for s in X] for X in (T, P)]
    inter = sum(len(a & b) for a, b in zip(*aug))
    hp, hr = inter / sum(map(len, aug[1])), inter / sum(map(len, aug[0]))
    ctp = sum(1 for a, b in zip(T, P) for j in a & b if anc[j] <= a & b)
    strict = [[j for j in b if not par[j] <= b] for b in P]
    lenient = [[j for j in b if par[j] and not par[j] & b] for b in P]
    res = M.evaluate(t, p, index)
    assert res["hier_precision"] == pytest.approx(hp) and res["hier_recall"] == pytest.approx(hr)
    assert res["c_micro_f1"] == pytest.approx(2 * ctp / (t.sum() + p.sum()))
    for mode, orphans in (("strict", strict), ("lenient", lenient)):
        c = M.consistency(p, index, dag_mode=mode)
        assert c["n_orphan_nodes"] == sum(map(len, orphans))
        assert c["n_inconsistent_samples"] == sum(1 for o in orphans if o)


# ---- (c) dense and sparse inputs agree --------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_dense_and_sparse_identical(big, seed):
    t, p = random_pair(big, seed)
    ref = M.evaluate(t, p, big, dag_mode="lenient")
    for conv in (lambda a: a.astype(np.int8), sp.csr_array, sp.csr_matrix, sp.coo_array,
                 lambda a: sp.csc_matrix(a.astype(np.float32))):
        assert M.evaluate(conv(t), conv(p), big, dag_mode="lenient") == ref
    assert (M.orphan_mask(sp.csr_array(p), big).toarray() == M.orphan_mask(p, big)).all()


def test_unsorted_sparse_with_duplicates(tree):
    # Duplicate and unsorted entries must count once; the caller's matrix is left alone.
    m = sp.csr_array((np.array([1, 1, 1]), np.array([5, 2, 2]), np.array([0, 3])), shape=(1, 6))
    before = m.indices.copy()
    assert M.as_csr(m).toarray().tolist() == [[False, False, True, False, False, True]]
    assert (m.indices == before).all()


# ---- (d) properties ---------------------------------------------------------------------------
def matrices(index, max_rows=8):
    return st.lists(st.lists(st.booleans(), min_size=index.n_nodes, max_size=index.n_nodes),
                    min_size=1, max_size=max_rows).map(lambda r: np.array(r, dtype=bool))


_TREE = Taxonomy.parse(TREE).compile()
_DAG = Taxonomy.parse(DAG + "  D\n    &C\n    E\n      &C\n").compile()


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([_TREE, _DAG]).flatmap(lambda ix: st.tuples(st.just(ix), matrices(ix))))
def test_closed_predictions_have_no_orphans(case):
    index, y = case
    closed = M.augment_ancestors(y, index)
    for mode in M.DAG_MODES:
        assert M.consistency(closed, index, dag_mode=mode)["n_orphan_nodes"] == 0
    strict, lenient = M.orphan_mask(y, index), M.orphan_mask(y, index, "lenient")
    assert not (lenient & ~strict).any() and not (strict & ~y).any()


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([_TREE, _DAG]).flatmap(
    lambda ix: st.tuples(st.just(ix), matrices(ix), matrices(ix))))
def test_perfect_and_closed_predictions(case):
    index, a, b = case
    gold = M.augment_ancestors(a, index)
    if gold.any():
        res = M.evaluate(gold, gold, index)
        assert res["hier_f1"] == res["c_micro_f1"] == res["micro_f1"] == 1.0
    # Both closed: every right node has a right path, so C-F1 is flat F1.
    n = min(len(a), len(b))
    gold, pred = gold[:n], M.augment_ancestors(b[:n], index)
    res = M.evaluate(gold, pred, index)
    assert res["c_micro_f1"] == pytest.approx(res["micro_f1"])
    assert res["c_macro_f1"] == pytest.approx(res["macro_f1"])


# ---- (e) the CLI ------------------------------------------------------------------------------
@pytest.fixture
def cli(tmp_path):
    app = typer.Typer()
    app.command("metrics")(metrics_command)
    (tmp_path / "t.tax").write_text(TREE, encoding="utf-8")
    runner = CliRunner()

    def run(gold: str | bytes, pred: str | bytes, *args):
        for name, body in (("gold.jsonl", gold), ("pred.jsonl", pred)):
            data = body if isinstance(body, bytes) else body.encode("utf-8")
            (tmp_path / name).write_bytes(data)
        return runner.invoke(app, [str(tmp_path / "gold.jsonl"), str(tmp_path / "pred.jsonl"),
                                   "-t", str(tmp_path / "t.tax"), *args])

    return run


GOLD = '{"labels": ["A1x"], "text": "x"}\n{"labels": ["B1"]}\n'
PRED = '{"labels": ["A1x", "A"]}\n\n{"labels": ["B", "B1", "A2"]}\n'


def test_cli_json(cli):
    r = cli(GOLD, PRED, "--json", "--per-label")
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    for key in ("micro_f1", "macro_f1", "micro_precision", "micro_recall", "macro_precision",
                "macro_recall", "per_level", "hier_precision", "hier_recall", "hier_f1",
                "c_micro_f1", "c_macro_f1", "inconsistent_samples", "orphan_nodes",
                "exact_match", "hamming_loss", "hamming_score_jaccard", "one_minus_hamming_loss",
                "samples_f1", "n_samples", "n_labels", "leaf_micro_f1", "leaf_macro_f1",
                "per_label"):
        assert key in res
    # Gold is closed under ancestors; predictions are not (same as the hand-computed case).
    assert res["c_micro_f1"] == pytest.approx(0.6) and res["orphan_nodes"] == pytest.approx(0.4)
    assert "per_label" not in json.loads(cli(GOLD, PRED, "--json").output)


def test_cli_tables(cli):
    r = cli(GOLD, PRED, "--per-label", "--dag-mode", "lenient")
    assert r.exit_code == 0, r.output
    for text in ("Per level", "hier P / R / F1", "orphan nodes", "A1x", "lenient"):
        assert text in r.output


@pytest.mark.parametrize("gold, pred, bad_file, line, words", [
    ('{"labels": ["A"]}\n{"labels": [}\n', '{"labels": []}\n{"labels": []}\n', "gold", 2, "malformed JSON"),
    ('{"labels": ["A"]}\n', '{"label": ["A"]}\n', "pred", 1, '"labels"'),
    ('{"labels": ["A"]}\n', '["A"]\n', "pred", 1, '"labels"'),
    ('{"labels": "A"}\n', '{"labels": ["A"]}\n', "gold", 1, "list"),
    ('{"labels": ["A"]}\n', '{"labels": ["A1y"]}\n', "pred", 1, "did you mean 'A1', 'A1x'?"),
    ('{"labels": ["A"]}\n{"labels": ["B"]}\n', '{"labels": ["A"]}\n', "gold", 2, "no partner"),
    ('{"labels": ["A"]}\n', '\n{"labels": ["A"]}\n{"labels": ["B"]}\n', "pred", 3, "no partner"),
    ('{"labels": ["A"]}\n{"labels": ["B"]}\n', b'{"labels": ["A"]}\n{"labels": ["\xff"]}\n',
     "pred", 2, "UTF-8"),
])
def test_cli_bad_input(cli, gold, pred, bad_file, line, words):
    r = cli(gold, pred)
    err = r.exception
    assert isinstance(err, DataError), r.output
    assert err.path.endswith(f"{bad_file}.jsonl") and err.line == line
    assert words in err.message


def test_cli_root_label_ignored_and_missing_file(cli, tmp_path):
    r = cli('{"labels": ["ROOT", "A"]}\n', '{"labels": ["A"]}\n', "--json")
    assert json.loads(r.output)["exact_match"] == 1.0
    (tmp_path / "gold.jsonl").unlink()
    app = typer.Typer()
    app.command("metrics")(metrics_command)
    r = CliRunner().invoke(app, [str(tmp_path / "gold.jsonl"), str(tmp_path / "pred.jsonl"),
                                 "-t", str(tmp_path / "t.tax")])
    assert isinstance(r.exception, DataError) and "not found" in r.exception.message
