"""The scikit-learn estimator: fit on in-memory data through the CLI's code path, predict like
``hmtc predict``, save/load in the checkpoint format both ways, clone, GridSearchCV, input forms."""

from __future__ import annotations

import gc
import json
import warnings
import pickle
import re
import tempfile

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from typer.testing import CliRunner

from hmtc import HierarchicalClassifier
from hmtc.cli import app
from hmtc.errors import ConfigError, DataError, HmtcError
from hmtc.estimator import NotFitted, metric_scorer
from hmtc.taxonomy import Taxonomy

from conftest import TAXONOMY, make_texts

runner = CliRunner()
SMALL = {"model": {"layers": [-1, -2], "freeze_embeddings": False}, "train": {"threads": 1}}
OPTIONS = {"filters": 16, "tower_dim": 32, "dropout": 0.0}


def corpus(n: int, seed: int) -> tuple[list[str], list[list[str]]]:
    """Texts with path labels ``animal/cat`` (the fixtures' ``animal-cat``)."""
    rows = make_texts(n, seed)
    return [r["text"] for r in rows], [[lab.replace("-", "/") for lab in r["labels"]] for r in rows]


def tiny(encoder, **params) -> HierarchicalClassifier:
    return HierarchicalClassifier("msml", str(encoder), **{
        "epochs": 2, "batch_size": 8, "lr": 1e-3, "head_lr": 1e-2, "max_length": 32, "options": OPTIONS,
        "config": SMALL, "dev_fraction": 0.2, **params})


def predict_cli(folder, texts: list[str]) -> list[dict]:
    r = runner.invoke(app, ["predict", str(folder), *texts], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return [json.loads(line) for line in r.stdout.splitlines()]


@pytest.fixture(scope="module")
def fitted(tiny_encoder, tmp_path_factory):
    texts, labels = corpus(80, 1)
    return tiny(tiny_encoder, output_dir=tmp_path_factory.mktemp("runs")).fit(texts, labels)


def test_fit_leaves_a_cli_run_folder(fitted):
    assert fitted.classes_.tolist() == ["animal", "plant", "animal/cat", "animal/dog", "plant/rose", "plant/tree"]
    assert [n for n in fitted.taxonomy_.nodes if n != fitted.taxonomy_.root] == sorted(fitted.classes_.tolist())
    assert len(fitted.history_) == 2 and "dev_micro_f1" in fitted.history_[0]
    assert np.ndim(fitted.thresholds_) == 0
    run = fitted.run_dir_
    for name in ("best/checkpoint.json", "best/decode.json", "last/train_state.json", "metrics.json",
                 "data/data.toml", "data/train.jsonl", "data/taxonomy.tax"):
        assert (run / name).is_file(), name
    assert fitted.config_.train.record_dir == ""
    assert fitted.config_.model.options["filters"] == 16
    assert fitted.metrics_["split"] == "dev"


def test_predict_matches_the_cli(fitted):
    texts = ["meow kitten here", "oak leaf today", "rose petal thorn and a puppy"]
    pred = fitted.predict(texts)
    cli = predict_cli(fitted.run_dir_, texts)
    assert pred == [row["labels"] for row in cli]
    labels, unsure = fitted.predict(texts, return_unsure=True)
    assert labels == pred and unsure == [row["unsure"] for row in cli]
    assert all(set(u) <= set(lab) for u, lab in zip(unsure, labels))
    index = fitted.checkpoint_.index
    for labels in pred:        # consistent: every predicted node's parent is predicted
        assert all("/" not in lab or lab.rsplit("/", 1)[0] in labels for lab in labels)
    logits, proba = fitted.predict_scores(texts), fitted.predict_proba(texts)
    assert logits.shape == proba.shape == (3, index.n_nodes)
    temps = fitted.checkpoint_.decode["temperatures"]          # calibrated per level, as predict reports
    t = np.ones(index.n_nodes)
    for sl, temp in zip(index.level_slices, temps):
        t[sl] = temp
    np.testing.assert_allclose(proba, 1 / (1 + np.exp(-logits / t)), rtol=1e-6)
    assert fitted.label_classes_ == {}          # per-label classes: tests/test_label_classes.py
    with pytest.raises(HmtcError, match="no labels with classes"):
        fitted.predict_classes(texts)


def test_evaluate_is_hmtc_metrics_and_score_one_figure_of_them(fitted):
    texts, labels = corpus(24, 2)
    m = fitted.evaluate(texts, labels)
    for key in ("micro_f1", "macro_f1", "hier_f1", "per_level", "exact_match"):
        assert key in m
    assert m["inconsistent_samples"] == 0 and m["n_samples"] == 24
    score = fitted.score(texts, labels)
    assert type(score) is float and score == m["leaf_micro_f1"] and fitted.get_params()["scoring"] == "leaf_micro_f1"
    macro = clone(fitted).set_params(scoring="macro_f1")
    assert macro.get_params()["scoring"] == "macro_f1"
    assert metric_scorer("macro_f1")(fitted, texts, labels) == m["macro_f1"]
    assert metric_scorer("hier_f1")(fitted, texts, labels) == m["hier_f1"]
    with pytest.raises(ConfigError, match=r"scoring='per_level' is no figure .*one of: .*leaf_micro_f1"):
        fitted.set_params(scoring="per_level").score(texts, labels)
    fitted.set_params(scoring="macro_f1")
    try:
        assert fitted.score(texts, labels) == m["macro_f1"]
    finally:
        fitted.set_params(scoring="leaf_micro_f1")


def test_predict_one_text_and_the_top_k(fitted):
    texts = ["meow kitten here", "oak leaf today", ""]
    assert fitted.predict(texts[0]) == fitted.predict(texts)[0]
    assert fitted.predict(texts[0], return_unsure=True) == tuple(x[0] for x in fitted.predict(texts, return_unsure=True))
    top = fitted.predict_top_k(texts, k=2)
    r = runner.invoke(app, ["predict", str(fitted.run_dir_), "--top-k", "2", *texts[:2]], catch_exceptions=False)
    cli = [json.loads(line) for line in r.stdout.splitlines()]
    assert top[:2] == [[[(n["id"], n["score"]) for n in lv["nodes"]] for lv in row["top_k"]] for row in cli]
    assert [len(levels) for levels in top] == [2, 2, 0]           # an empty text is not scored
    assert all(len(lv) == 2 and lv[0][1] >= lv[1][1] for lv in top[0])
    proba = fitted.predict_proba(texts[:1])[0]
    best = int(np.argmax(proba[2:])) + 2                           # level 2: the leaves' columns
    assert top[0][1][0] == (fitted.classes_[best], round(float(proba[best]), 4))
    assert fitted.predict_top_k(texts[0], k=1) == [lv[:1] for lv in top[0]]
    for k in (0, 1.5, True):
        with pytest.raises(ConfigError, match="k must be a whole number"):
            fitted.predict_top_k(texts, k=k)


def test_save_load_both_ways(fitted, tmp_path, tiny_encoder, run_config):
    texts = ["dog bark", "tree oak", "cat rose"]
    folder = fitted.save(tmp_path / "clf")
    assert [r["labels"] for r in predict_cli(folder, texts)] == fitted.predict(texts)
    back = HierarchicalClassifier.load(folder)
    assert back.predict(texts) == fitted.predict(texts)
    np.testing.assert_array_equal(back.predict_scores(texts), fitted.predict_scores(texts))
    assert back.thresholds_ == fitted.thresholds_ and back.run_dir_ is None and back.metrics_ is None

    # a CLI run folder (its best/) loads in Python
    r = runner.invoke(app, ["train", str(run_config), "--quiet", "--set", "train.epochs=1",
                            "--set", "train.record_dir=''"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    run = tmp_path / "runs" / "tiny-msml"
    clf = HierarchicalClassifier.load(run, label_sep="-")
    assert clf.run_dir_ == run and len(clf.history_) == 1 and clf.metrics_["split"] == "test"
    assert clf.predict(texts) == [r["labels"] for r in predict_cli(run, texts)]
    assert clf.evaluate(texts, [["animal-dog"], ["plant-tree"], ["animal-cat", "plant-rose"]])["n_samples"] == 3


def test_clone_and_params(fitted):
    params = fitted.get_params()
    assert params["epochs"] == 2 and params["options"] == OPTIONS and params["label_sep"] == "/"
    fresh = clone(fitted)
    assert fresh.get_params() == params and not hasattr(fresh, "classes_")
    with pytest.raises(NotFitted, match="not fitted"):
        fresh.predict(["cat"])
    assert fresh.set_params(lr=5e-3).lr == 5e-3 and fitted.lr == 1e-3


def test_a_fitted_model_travels_as_its_checkpoint_not_a_pickle(fitted, tmp_path):
    texts = ["puppy bark", "thorn petal"]
    with pytest.raises(HmtcError, match=r"not pickled: save it with \.save\(folder\)"):
        pickle.dumps(fitted)
    copy = HierarchicalClassifier.load(fitted.save(tmp_path / "ckpt"))
    assert copy.predict(texts) == fitted.predict(texts)


def test_grid_search(tiny_encoder):
    texts, labels = corpus(48, 3)
    search = GridSearchCV(tiny(tiny_encoder, epochs=1), {"lr": [1e-3, 3e-3]}, cv=2,
                          scoring=metric_scorer("micro_f1"))
    search.fit(texts, labels)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.best_params_["lr"] in (1e-3, 3e-3)
    assert len(search.best_estimator_.predict(texts[:3])) == 3


def test_temporary_run_folder_goes_with_the_classifier(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    texts, labels = corpus(40, 4)
    clf = HierarchicalClassifier("tfidf", config={"train": {"threads": 1}}).fit(texts, labels)
    run = clf.run_dir_
    assert run.is_relative_to(tmp_path) and (run / "best" / "checkpoint.json").is_file()
    clf.fit(texts, labels)           # a refit replaces the previous temporary run
    assert not run.exists() and clf.run_dir_.exists()
    with pytest.raises(HmtcError, match="unknown option"):
        clf.set_params(options={"nope": 1}).fit(texts, labels)
    assert len(list(tmp_path.iterdir())) == 1           # the failed fit left nothing behind
    del clf
    gc.collect()
    assert not list(tmp_path.iterdir())


def test_record_only_when_asked(tmp_path):
    texts, labels = corpus(40, 4)
    clf = HierarchicalClassifier("tfidf", config={"train": {"threads": 1}}, output_dir=tmp_path / "runs",
                                 record_dir=str(tmp_path / "records")).fit(texts, labels)
    record = json.loads((tmp_path / "records" / f"{clf.run_dir_.name}.json").read_text())
    # the estimator's dataset has no test split: its figures are dev's, and named so
    assert record["model"] == "tfidf" and record["split"] == "dev" and clf.metrics_["split"] == "dev"
    assert record["metrics"]["micro_f1"] == clf.metrics_["dev"]["micro_f1"] and "test" not in clf.metrics_


def test_label_forms_and_errors(tmp_path):
    texts, paths = corpus(40, 5)
    ids = [[lab.replace("/", "-") for lab in labs] for labs in paths]
    taxonomy = Taxonomy.parse(TAXONOMY)
    base = dict(model="tfidf", config={"train": {"threads": 1}}, output_dir=tmp_path)
    # node ids of a given taxonomy, as numpy arrays, with an explicit dev set
    a = HierarchicalClassifier(**base).fit(np.array(texts[:30]), ids[:30], dev=(texts[30:], ids[30:]),
                                           taxonomy=taxonomy)
    assert a.classes_.tolist() == list(taxonomy.compile().ids)
    assert (a.run_dir_ / "data" / "dev.jsonl").read_text().count("\n") == 10
    # one path string per text, walked by display names ("animal/cat" -> animal-cat); the
    # taxonomy as a parameter
    single = [labs[0] for labs in paths]
    b = HierarchicalClassifier(**base, taxonomy=taxonomy).fit(texts, single)
    assert b.classes_.tolist() == a.classes_.tolist()
    assert b.predict(texts[:5]) == HierarchicalClassifier.load(b.run_dir_).predict(texts[:5])
    assert b.evaluate(texts, single)["n_samples"] == 40
    # built from paths with another separator
    c = HierarchicalClassifier(**base, label_sep="-").fit(texts, ids)
    assert c.classes_.tolist() == ["animal", "plant", "animal-cat", "animal-dog", "plant-rose", "plant-tree"]

    clf = HierarchicalClassifier(**base)
    for bad_texts, bad_labels, message in [
            (texts, paths[:-1], "40 texts"),
            ("one text", ["a"], "sequence"),
            (texts[:2], [["animal/cat"], []], "no label"),
            (texts[:2], [["animal/cat"], [3]], "non-empty strings"),
            (["cat", "  "], ["animal/cat", "plant/rose"], r"texts\[1\] is empty")]:
        with pytest.raises(DataError, match=message):
            clf.fit(bad_texts, bad_labels)
    with pytest.raises(DataError, match="neither a node id nor"):
        clf.fit(texts, ["animal/cow"] + single[1:], taxonomy=taxonomy)
    with pytest.raises(HmtcError, match="train.epochs: expected int"):
        HierarchicalClassifier(**{**base, "model": "msml"}, epochs="many").fit(texts, paths)


def test_unknown_params_and_odd_labels_are_one_clear_error(tmp_path):
    texts, paths = corpus(40, 5)
    single = [labs[0] for labs in paths]
    clf = HierarchicalClassifier(**TFIDF, output_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"set_params: unknown parameter 'epoch' \(did you mean epochs\?\); "
                                          r"the parameters: batch_size, config, .*, verbose$"):
        clf.set_params(epoch=3)
    with pytest.raises(ConfigError, match="unknown parameter 'bogus'; the parameters"):
        clf.set_params(lr=1e-3, bogus=1)
    assert clf.lr is None                       # nothing set when one name is unknown
    for label, words in [("animal//cat", "'animal//cat' has an empty path segment"),
                         ("/animal/cat", "'/animal/cat' has an empty path segment"),
                         ("animal/cat/", "'animal/cat/' has an empty path segment"),
                         ("animal/cat ", "'animal/cat ' has a leading or trailing space"),
                         (" animal/cat", "' animal/cat' has a leading or trailing space")]:
        with pytest.raises(DataError, match=re.escape(f"labels of text 3: {words}")):
            clf.fit(texts, single[:3] + [label] + single[4:])
    with pytest.raises(DataError, match=re.escape("dev labels of text 1: 'plant//rose' has an empty path")):
        clf.fit(texts, single, dev=(texts[:2], ["animal/cat", "plant//rose"]))
    with pytest.raises(DataError, match=re.escape("labels of text 2: ' cat' has a leading or trailing space")):
        clf.fit(texts[:3], [["animal", "cat"], ["plant", "rose"], ["animal", " cat"]])
    for sep in ("", None):
        with pytest.raises(ConfigError, match=f"label_sep must be a non-empty string.*not {sep!r}"):
            clf.set_params(label_sep=sep).fit(texts, single)
    assert not list(tmp_path.iterdir())         # nothing was trained


def test_pandas_series(tmp_path):
    pd = pytest.importorskip("pandas")
    texts, paths = corpus(30, 6)
    clf = HierarchicalClassifier("tfidf", config={"train": {"threads": 1}}, output_dir=tmp_path)
    clf.fit(pd.Series(texts), pd.Series(paths))
    assert len(clf.predict(pd.Series(texts[:4]))) == 4


def test_save_writes_a_plain_folder_and_never_deletes_what_it_did_not_write(fitted, tmp_path):
    from hmtc.errors import HmtcError
    folder = fitted.save(tmp_path / "clf")
    assert folder.is_dir() and not folder.is_symlink() and (folder / "checkpoint.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]          # no hidden version beside it
    fitted.save(folder)                                                           # an earlier save: replaced
    assert HierarchicalClassifier.load(folder).predict(["cat"]) == fitted.predict(["cat"])
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(HmtcError, match="not empty and not a checkpoint folder"):
        fitted.save(mine)
    (folder / "notes.txt").write_text("keep me too")                              # a user's file inside a save
    with pytest.raises(HmtcError, match="not empty"):
        fitted.save(folder)
    with pytest.raises(HmtcError, match="not empty"):
        fitted.save(fitted.run_dir_)                                              # a run folder
    assert (mine / "notes.txt").read_text() == "keep me" and (fitted.run_dir_ / "best").exists()
    fitted.save(mine, overwrite=True)
    assert not (mine / "notes.txt").exists() and (mine / "checkpoint.json").is_file()


TFIDF = dict(model="tfidf", config={"train": {"threads": 1}})


def test_two_d_labels_are_paths_one_per_text(tmp_path):
    texts, paths = corpus(40, 7)
    rows = [labs[0].split("/") for labs in paths]                  # HiClass: one column per level
    by_path = HierarchicalClassifier(**TFIDF, output_dir=tmp_path).fit(texts, [labs[0] for labs in paths])
    for y in (rows, [tuple(r) for r in rows], np.array(rows, dtype=object)):
        # lists of one length could be label sets that happen to share a size: read as paths, said so
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            clf = HierarchicalClassifier(**TFIDF, output_dir=tmp_path).fit(texts, y)
        told = [w for w in said if "read as one path per text" in str(w.message)]
        assert bool(told) == (not isinstance(y, np.ndarray))
        assert clf.classes_.tolist() == by_path.classes_.tolist()   # "cat" is no top-level label
        assert clf.evaluate(texts, y) == by_path.evaluate(texts, [labs[0] for labs in paths])
    # cells name nodes by id or display name; a shorter path ends in empty cells
    taxonomy = Taxonomy.parse(TAXONOMY)
    clf = HierarchicalClassifier(**TFIDF, output_dir=tmp_path, taxonomy=taxonomy)
    ids = [["animal", "animal-cat"], ["plant", "rose"], ["animal", ""], ["plant", None]] * 10
    clf.fit(texts, ids)
    gold = [json.loads(line)["labels"] for line in (clf.run_dir_ / "data" / "train.jsonl").read_text().splitlines()]
    dev = [json.loads(line)["labels"] for line in (clf.run_dir_ / "data" / "dev.jsonl").read_text().splitlines()] \
        if (clf.run_dir_ / "data" / "dev.jsonl").exists() else []
    assert {tuple(g) for g in gold + dev} == {("animal-cat",), ("plant-rose",), ("animal",), ("plant",)}
    # label sets of one size stay label sets when given as sets
    pairs = [{"animal/cat", "plant/rose"}, {"animal/dog", "plant/tree"}] * 20
    two = HierarchicalClassifier(**TFIDF, output_dir=tmp_path).fit(texts, pairs)
    assert two.classes_.tolist() == by_path.classes_.tolist()
    for bad, words in [([["animal", "", "cat"]] * 40, "a cell follows an empty one"),
                       ([["animal/cat", "plant/rose"]] * 40, "a cell holding label_sep '/'.*as sets"),
                       ([["", ""]] * 40, "no label"),
                       ([["animal", 3]] * 40, "must be strings")]:
        with pytest.raises(DataError, match=words):
            HierarchicalClassifier(**TFIDF, output_dir=tmp_path).fit(texts, bad)


class StandInFrame:
    """What the estimator reads of a pandas DataFrame, for when pandas is missing."""
    ndim = 2

    def __init__(self, rows: list[list]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def to_numpy(self) -> np.ndarray:
        return np.array(self.rows, dtype=object)


def test_two_d_labels_from_a_dataframe(tmp_path):
    texts, paths = corpus(30, 8)
    rows = [labs[0].split("/") for labs in paths]
    rows[0][1] = None                                               # a path that stops at level 1
    try:
        import pandas
        frame = pandas.DataFrame(rows, columns=["level1", "level2"])
    except ImportError:
        frame = StandInFrame(rows)
    clf = HierarchicalClassifier(**TFIDF, output_dir=tmp_path).fit(texts, frame)
    assert clf.classes_.tolist() == ["animal", "plant", "animal/cat", "animal/dog", "plant/rose", "plant/tree"]
    assert clf.evaluate(texts, frame)["n_samples"] == 30


def test_labels_the_model_lacks(tmp_path):
    texts, paths = corpus(40, 9)
    taxonomy = Taxonomy.parse(TAXONOMY)
    with pytest.raises(DataError, match=r"labels of text 0: 'animal/cow' is not in the taxonomy .*taxonomy="):
        HierarchicalClassifier(**TFIDF, output_dir=tmp_path, taxonomy=taxonomy).fit(texts, ["animal/cow"] + paths[1:])
    clf = HierarchicalClassifier(**TFIDF, output_dir=tmp_path).fit(texts, paths)
    known = clf.evaluate(texts[:4], paths[:4])
    gold = [paths[0] + ["animal/cow"], *paths[1:3], paths[3] + ["bird"]]
    with pytest.warns(UserWarning, match=r"2 gold label\(s\) unknown to the fitted model, e\.g\. 'animal/cow', "
                                         r"count as misses; fit with taxonomy="):
        m = clf.evaluate(texts[:4], gold)
    rows = {r["id"]: r for r in m["per_label"]}
    assert rows["animal/cow"]["support"] == rows["bird"]["support"] == 1
    assert rows["animal/cow"]["predicted"] == rows["bird"]["predicted"] == 0
    assert m["n_labels"] == known["n_labels"] + 2
    assert m["micro_precision"] == known["micro_precision"] and m["micro_recall"] < known["micro_recall"]
    with pytest.warns(UserWarning, match="count as misses"):
        assert clf.score(texts[:4], gold) == m["leaf_micro_f1"]
    assert clf.classes_.tolist() == list(clf.checkpoint_.index.ids)   # the model itself is untouched


def test_grid_search_ranks_by_score_without_a_scorer(tmp_path):
    texts, paths = corpus(40, 10)
    search = GridSearchCV(HierarchicalClassifier(**TFIDF, output_dir=tmp_path, taxonomy=Taxonomy.parse(TAXONOMY)),
                          {"scoring": ["leaf_micro_f1", "micro_f1"]}, cv=2)
    search.fit(texts, [[lab.replace("/", "-") for lab in labs] for labs in paths])
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


def test_verbose_shows_progress(tmp_path, capsys):
    texts, paths = corpus(30, 11)
    quiet = HierarchicalClassifier(**TFIDF, output_dir=tmp_path).fit(texts, paths)
    quiet.predict(texts)
    assert capsys.readouterr().err == ""
    loud = HierarchicalClassifier(**TFIDF, output_dir=tmp_path, verbose=True).fit(texts, paths)
    assert "dev micro-F1" in capsys.readouterr().err
    loud.predict(texts)
    assert re.search(r"predict .* 30/30", capsys.readouterr().err)
