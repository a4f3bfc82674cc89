"""Temperature scaling per level and the expected calibration error."""

from __future__ import annotations

import numpy as np
import pytest

from hmtc.calibration import calibrated, ece, fit_temperatures, reliability
from hmtc.taxonomy import Taxonomy

INDEX = Taxonomy.parse("ROOT\n  a\n    a1\n    a2\n  b\n    b1\n").compile()


def test_fit_recovers_the_temperature_of_each_level():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 4, size=(20_000, INDEX.n_nodes))
    true = np.where(INDEX.levels == 1, 2.0, 0.5)               # level 1 overconfident, level 2 under
    y = rng.random(z.shape) < 1 / (1 + np.exp(-z / true))
    temps = fit_temperatures(z, y, INDEX)
    assert temps == pytest.approx([2.0, 0.5], rel=0.05)
    before, after = ece(calibrated(z, None, INDEX), y), ece(calibrated(z, temps, INDEX), y)
    assert after < 0.01 < before


def test_ece_on_hand_computed_bins():
    p = np.array([0.05, 0.05, 0.95, 0.95, 0.55])
    y = np.array([0, 1, 1, 1, 0])
    # bins of width 0.5: [0.05, 0.05] freq 0.5 conf 0.05; [0.95, 0.95, 0.55] freq 2/3 conf 0.8167
    assert ece(p, y, bins=2) == pytest.approx((2 * 0.45 + 3 * abs(2 / 3 - 0.8166667)) / 5, rel=1e-5)
    rows = reliability(p, y, bins=2)
    assert [r["count"] for r in rows] == [2, 3] and rows[0]["frequency"] == 0.5


def test_levels_without_both_classes_keep_t_1():
    z = np.zeros((4, INDEX.n_nodes))
    y = np.zeros_like(z, dtype=bool)
    y[:, INDEX.level_slices[1]] = [[1, 0, 1]] * 4
    assert fit_temperatures(z, y, INDEX)[0] == 1.0


def test_eval_fits_temperatures_and_predict_reports_calibrated_probabilities(run_config, tmp_path):
    import json

    from typer.testing import CliRunner

    from hmtc.loading import load_checkpoint
    from hmtc.cli import app
    from hmtc.decode import stops_early
    run = CliRunner()
    r = run.invoke(app, ["train", str(run_config), "--quiet", "--set", "train.epochs=2"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    folder = tmp_path / "runs" / "tiny-msml"
    metrics = json.loads((folder / "metrics.json").read_text())
    cal = metrics["calibration"]
    assert len(cal["temperatures"]) == 2 and all(t > 0 for t in cal["temperatures"])
    assert {"ece_before", "ece_after"} <= set(cal) and len(cal["reliability_after"]) == 15
    assert cal["consistent"]["none"]["ece"] == pytest.approx(cal["ece_after"])
    ckpt = load_checkpoint(folder / "best")
    assert ckpt.decode["temperatures"] == cal["temperatures"]
    texts = ["meow kitten here", "oak leaf today", "the big"]
    r = run.invoke(app, ["predict", str(folder), *texts, "--top-k", "2", "--all-scores", "--leaf"],
                   catch_exceptions=False)
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    probs = calibrated(ckpt.scores(texts), ckpt.decode["temperatures"], ckpt.index)
    keep = np.zeros((len(rows), ckpt.index.n_nodes), dtype=bool)
    for i, row in enumerate(rows):
        for node, score in row["all_scores"].items():
            assert score == pytest.approx(probs[i, ckpt.index.id_to_index[node]], abs=1e-4)
        assert [lv["level"] for lv in row["top_k"]] == [1, 2] and all(len(lv["nodes"]) == 2 for lv in row["top_k"])
        keep[i, [ckpt.index.id_to_index[n] for n in row["labels"]]] = True
    assert keep.any(1).all() and not stops_early(keep, ckpt.index).any()       # --leaf: every path reaches a leaf


def _dag_index():
    from hmtc.taxonomy import Taxonomy
    return Taxonomy.parse("ROOT\n  a\n    a1\n    ab\n  b\n    &ab\n    b1\n").compile()


def test_consistent_scores_min_caps_children_and_max_lifts_parents():
    from hmtc.calibration import consistent, violations
    index = _dag_index()                       # ab has two parents
    col = {n: i for i, n in enumerate(index.ids)}
    rng = np.random.default_rng(0)
    p = rng.random((50, index.n_nodes))
    assert violations(p, index, 0.0) > 0
    child, parent = np.repeat(np.arange(index.n_nodes), np.diff(index.parent_ptr)), index.parent_idx
    lo, hi = consistent(p, index, "min"), consistent(p, index, "max")
    for q in (lo, hi):
        assert (q[:, child] <= q[:, parent]).all() and violations(q, index, 0.0) == 0
    assert (lo <= p).all() and (hi >= p).all()            # each moves only in its direction
    for r in range(len(p)):                                # by hand: the formulas in the docstring
        assert lo[r, col["ab"]] == min(p[r, col["ab"]], p[r, col["a"]], p[r, col["b"]])
        assert lo[r, col["a1"]] == min(p[r, col["a1"]], p[r, col["a"]])
        assert hi[r, col["a"]] == max(p[r, col["a"]], p[r, col["a1"]], p[r, col["ab"]])
        assert hi[r, col["b"]] == max(p[r, col["b"]], p[r, col["b1"]], p[r, col["ab"]])
    assert consistent(p, index, "none") is p
    with pytest.raises(ValueError, match="consistent_scores"):
        consistent(p, index, "mean")


def test_predict_and_estimator_report_consistent_scores(run_config, tmp_path, invoke):
    import json

    from hmtc.calibration import consistent, violations
    from hmtc.loading import load_checkpoint
    from hmtc.estimator import HierarchicalClassifier
    invoke("train", run_config, "--quiet", "--set", "train.epochs=1", "--set", "decode.consistent_scores=min")
    folder = tmp_path / "runs" / "tiny-msml"
    cal = json.loads((folder / "metrics.json").read_text())["calibration"]
    assert set(cal["consistent"]) == {"none", "min", "max"}
    assert cal["consistent"]["none"]["ece"] == pytest.approx(cal["ece_after"])
    assert cal["consistent"]["min"]["violations"] == cal["consistent"]["max"]["violations"] == 0.0
    ckpt = load_checkpoint(folder / "best")
    texts = ["meow kitten here", "oak leaf today", "rose petal thorn and a puppy"]
    expected = consistent(calibrated(ckpt.scores(texts), ckpt.decode["temperatures"], ckpt.index), ckpt.index, "min")
    assert violations(expected, ckpt.index, 0.0) == 0
    rows = [json.loads(line) for line in invoke("predict", folder, *texts, "--all-scores").output.splitlines()
            if line.startswith("{")]
    for i, row in enumerate(rows):
        assert list(row["all_scores"].values()) == pytest.approx(expected[i], abs=1e-4)
    np.testing.assert_allclose(HierarchicalClassifier.load(folder).predict_proba(texts), expected, rtol=1e-5)
