"""Readers, catalog, builders, statistics and ``hmtc data stats`` on tiny files in tmp_path."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from hmtc.cli import app as hmtc_app
from hmtc.cli.data import app as data_app
from hmtc.data import (dev_split, encode_labels, load_dataset, read_class_folders,
                       read_goemotions, read_jsonl, read_label_text, read_table)
from hmtc.data.builders import goemotions_taxonomy, taxonomy_from_dataset
from hmtc.data.catalog import data_dir
from hmtc.data.stats import dataset_stats
from hmtc.errors import DataError
from hmtc.taxonomy import Taxonomy


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


DUEE = ("人生-死亡|灾害/意外-坍/垮塌 楼塌了 两人 遇难\r\n"
        "\n"
        "组织关系-裁员 公司裁员\n"
        "组织关系-裁员|组织关系-裁员 又裁员\n")


# ---- readers --------------------------------------------------------------------------------
def test_read_label_text(tmp_path):
    f = write(tmp_path / "t.txt", DUEE)
    ex = read_label_text(f)
    assert ex.texts == ["楼塌了 两人 遇难", "公司裁员", "又裁员"]      # first space only, \r gone
    assert ex.labels[0] == ["人生-死亡", "灾害/意外-坍/垮塌"]
    assert ex.sources == [f"{f}:1", f"{f}:3", f"{f}:4"]                # blank line 2 passed over
    assert ex.skipped == 0


def test_read_table_header_csv_and_mapping(tmp_path):
    f = write(tmp_path / "t.csv", 'id,body,tags\n1,"hello, world",0;1\n2,bye,1\n')
    ex = read_table(f, "body", "tags", label_sep=";", delimiter=",", header=True,
                    label_names={"0": "greet", "1": "talk"})
    assert ex.texts == ["hello, world", "bye"]
    assert ex.labels == [["greet", "talk"], ["talk"]]
    with pytest.raises(DataError, match="no column 'text'"):
        read_table(f, "text", "tags", delimiter=",", header=True)


def test_read_goemotions(tmp_path):
    names = write(tmp_path / "labels.txt", "admiration\namusement\nneutral\n")
    f = write(tmp_path / "train.tsv", '"Quoted" start\t0,2\tabc\nplain\t1\tdef\n')
    ex = read_goemotions(f, names)
    assert ex.texts[0] == '"Quoted" start'                         # TSV is never unquoted
    assert ex.labels == [["admiration", "neutral"], ["amusement"]]
    bad = write(tmp_path / "bad.tsv", "ok\t1\tx\nnope\t7\ty\n")
    with pytest.raises(DataError, match=r"bad\.tsv:2: label id '7'"):
        read_goemotions(bad, names)


def test_read_jsonl(tmp_path):
    f = write(tmp_path / "d.jsonl", '{"text": "a", "labels": ["x", "y"]}\n{"t": "b", "l": "z"}\n')
    with pytest.raises(DataError, match=r"d\.jsonl:2: no key 'text'"):
        read_jsonl(f)
    f2 = write(tmp_path / "e.jsonl", '{"t": "b", "l": "z"}\n')
    assert read_jsonl(f2, text_key="t", labels_key="l").labels == [["z"]]


BAD_INPUTS = {                       # name: (reader, kwargs, content, bad line, skip reason)
    "no separator": (read_label_text, {}, "a ok\nnoseparator\nb ok\n", 2, "no separator"),
    "empty text": (read_label_text, {}, "a ok\nb  \nc ok\n", 2, "empty text"),
    "no labels": (read_label_text, {}, "a ok\n text only\n", 2, "no labels"),
    "non-utf8": (read_label_text, {}, b"a ok\nb ok\nc bad \xff byte\nd ok\n", 3, "bad encoding"),
    "wrong columns": (read_table, {"text_col": 0, "labels_col": 1},
                      "t\ta\nt\ta\textra\nt\tb\n", 2, "wrong column count"),
    "bad json": (read_jsonl, {}, '{"text": "a", "labels": ["x"]}\n{"text": "b", \n', 2,
                 "bad JSON"),
    "empty json text": (read_jsonl, {}, '{"text": " ", "labels": ["x"]}\n{"text": "b", "labels": "x"}\n',
                        1, "empty text"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_names_file_and_line(tmp_path, case):
    reader, kwargs, content, line, reason = BAD_INPUTS[case]
    f = write(tmp_path / "in.txt", content)
    with pytest.raises(DataError) as e:
        reader(f, **kwargs)
    assert str(e.value).startswith(f"{f}:{line}: ")
    assert e.value.path == str(f) and e.value.line == line
    ex = reader(f, **kwargs, on_error="skip")
    assert ex.skipped == 1 and ex.skipped_reasons == {reason: 1}
    assert f"{f}:{line}" not in ex.sources and len(ex) >= 1


def _corpus_files():
    return {"c-train/sci.space/2": b"orbit\r\nmoon\n", "c-train/sci.space/1": b"rocket\n",
            "c-train/alt.atheism/9": b"god?\n", "c-train/.DS_Store": b"\x00",
            "c-train/README": b"not a class", "c-test/alt.atheism/5": b"test post\n"}


def test_class_folders_plain_and_tar(tmp_path):
    for name, data in _corpus_files().items():
        write(tmp_path / "dir" / name, data)
    tgz = tmp_path / "c.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        for name, data in reversed(list(_corpus_files().items())):   # archive order irrelevant
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    for src in (tmp_path / "dir", tgz):
        ex = read_class_folders(src, split="train")
        assert ex.labels == [["alt.atheism"], ["sci.space"], ["sci.space"]]
        assert ex.texts == ["god?", "rocket", "orbit\nmoon"]
        assert ex.sources[0] == f"{src}/c-train/alt.atheism/9"
        assert read_class_folders(src, split="test").texts == ["test post"]
    with pytest.raises(DataError, match="split 'dev' matches 0"):
        read_class_folders(tgz, split="dev")


def test_class_folders_bad_member(tmp_path):
    write(tmp_path / "ok/a/1", "fine\n")
    write(tmp_path / "ok/a/2", b"line one\nline two\nbad \xe9\n")
    write(tmp_path / "ok/b/3", "   \n")
    with pytest.raises(DataError) as e:
        read_class_folders(tmp_path / "ok")
    assert str(e.value).startswith(f"{tmp_path}/ok/a/2:3: not valid utf-8")
    ex = read_class_folders(tmp_path / "ok", on_error="skip")
    assert ex.texts == ["fine"] and ex.skipped_reasons == {"bad encoding": 1, "empty text": 1}
    assert read_class_folders(tmp_path / "ok", encoding="latin-1",
                              on_error="skip").texts[1] == "line one\nline two\nbad é"


# ---- catalog --------------------------------------------------------------------------------
def test_encode_labels_closure_and_unknown(tmp_path):
    f = write(tmp_path / "t.txt", DUEE + "人生-死忙 typo\n")
    ex = read_label_text(f)
    tax = Taxonomy.from_paths(["人生-死亡", "灾害/意外-坍/垮塌", "组织关系-裁员"], sep="-", maxsplit=1)
    with pytest.raises(DataError) as e:
        encode_labels(ex, tax)
    assert str(e.value).startswith(f"{f}:5: label '人生-死忙'") and "'人生-死亡'" in str(e.value)
    y = encode_labels(ex, tax, on_error="skip")
    assert ex.skipped_reasons["unknown label"] == 1 and not y[3].any()
    ix = tax.compile()
    assert set(ix.labels_of(y[:1])[0]) == {"人生", "人生-死亡", "灾害/意外", "灾害/意外-坍/垮塌"}
    # closed under ancestors: every positive node's parent is positive
    rows, cols = np.nonzero(y)
    assert all(ix.parent[c] < 0 or y[r, ix.parent[c]] for r, c in zip(rows, cols))


def test_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("HMTC_DATA", raising=False)
    with pytest.raises(DataError, match="HMTC_DATA"):
        data_dir()
    monkeypatch.setenv("HMTC_DATA", str(tmp_path))
    assert data_dir() == tmp_path
    (tmp_path / "ds").mkdir()
    assert data_dir(tmp_path / "ds") == tmp_path / "ds"            # --data-dir beats HMTC_DATA
    with pytest.raises(DataError, match="does not exist"):
        data_dir(tmp_path / "missing")


def test_builtin_duee_from_data_dir(tmp_path):
    write(tmp_path / "duee/multi-classification-train.txt", DUEE)
    write(tmp_path / "duee/multi-classification-test.txt", "人生-死亡 x\n")
    ds = load_dataset("duee", data_dir=tmp_path)
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 3, "test": 1}
    assert ds.taxonomy_path.name == "duee.tax" and ds.taxonomy_path.parent.name == "taxonomies"
    tax = taxonomy_from_dataset("duee", data_dir=tmp_path)
    assert tax.stats()["per_level"] == [3, 3]
    assert tax.name("灾害/意外-坍/垮塌") == "坍/垮塌" and tax.parents("灾害/意外-坍/垮塌") == ["灾害/意外"]
    with pytest.raises(DataError, match="no split 'dev'"):
        load_dataset("duee", data_dir=tmp_path, splits=["dev"])
    with pytest.raises(DataError, match="did you mean 'duee'"):
        load_dataset("dueee", data_dir=tmp_path)


def _toml_dataset(tmp_path: Path) -> Path:
    write(tmp_path / "ds/train.jsonl", "".join(
        json.dumps({"body": t, "tags": labs}) + "\n" for t, labs in
        [("a", ["x/1"]), ("b", ["x/2", "y/1"]), ("c", ["x/1"]), ("a", ["y/1"])]))
    write(tmp_path / "shared/test.jsonl", json.dumps({"body": "d", "tags": ["y/1"]}) + "\n")
    return write(tmp_path / "ds/my.toml", '''
name = "my"
format = "jsonl"
text_key = "body"
labels_key = "tags"
taxonomy = "my.tax"
[splits]
train = "train.jsonl"
test = { path = "test.jsonl" }
[taxonomy_from]
sep = "/"
''')


def test_toml_dataset(tmp_path):
    toml = _toml_dataset(tmp_path)
    ds = load_dataset(toml, data_dir=tmp_path / "shared")        # test.jsonl found in the data dir
    assert ds.name == "my" and ds.taxonomy_path == tmp_path / "ds/my.tax"
    assert ds.splits["train"].labels[1] == ["x/2", "y/1"] and ds.splits["test"].texts == ["d"]
    tax = taxonomy_from_dataset(toml, data_dir=tmp_path / "shared")
    assert tax.nodes == ["x", "x/1", "x/2", "y", "y/1"]
    write(tmp_path / "bad.toml", 'name = "b"\nformat = "jsonl"\ncolour = 1\n[splits]\ntrain = "t"\n')
    with pytest.raises(DataError, match="unknown option 'colour'"):
        load_dataset(tmp_path / "bad.toml")


def test_taxonomy_from_labels_reads_every_split(tmp_path):
    toml = _toml_dataset(tmp_path)
    write(tmp_path / "shared/test.jsonl", json.dumps({"body": "d", "tags": ["z/9"]}) + "\n")   # test only
    tax = taxonomy_from_dataset(toml, data_dir=tmp_path / "shared")
    assert tax.nodes == ["x", "x/1", "x/2", "y", "y/1", "z", "z/9"]
    r = CliRunner().invoke(hmtc_app, ["taxonomy", "from-labels", str(toml), "--data-dir", str(tmp_path / "shared")])
    assert r.exit_code == 0, r.output
    assert "labels of 5 samples read from every split: train, test" in " ".join(r.stderr.split())
    assert Taxonomy.parse(r.stdout).nodes == tax.nodes


def test_dev_split_deterministic(tmp_path):
    ex = read_label_text(write(tmp_path / "t.txt", "".join(f"a t{i}\n" for i in range(50))))
    tr1, dv1 = dev_split(ex, 0.2, seed=3)
    tr2, dv2 = dev_split(ex, 0.2, seed=3)
    assert dv1.texts == dv2.texts and tr1.texts == tr2.texts and len(dv1) == 10
    assert sorted(tr1.texts + dv1.texts) == sorted(ex.texts)
    assert dv1.sources == sorted(dv1.sources, key=lambda s: int(s.rsplit(":", 1)[1]))
    assert dev_split(ex, 0.2, seed=4)[1].texts != dv1.texts


# ---- builders -------------------------------------------------------------------------------
def _goemotions_maps(tmp_path, sadness_sentiment="negative"):
    labels = write(tmp_path / "labels.txt", "anger\njoy\nlove\nsadness\nneutral\n")
    ekman = write(tmp_path / "ekman.json", json.dumps(
        {"anger": ["anger"], "joy": ["joy", "love"], "sadness": ["sadness"]}))
    sent = {"positive": ["joy", "love"], "negative": ["anger"]}
    sent[sadness_sentiment] = sent.get(sadness_sentiment, []) + ["sadness"]
    return labels, ekman, write(tmp_path / "sent.json", json.dumps(sent))


def test_goemotions_builder(tmp_path):
    tax = goemotions_taxonomy(*_goemotions_maps(tmp_path))
    ix = tax.compile()
    assert tax.stats()["per_level"] == [3, 4, 5]
    assert tax.parents("love") == ["ekman:joy"] and tax.parents("ekman:joy") == ["sentiment:positive"]
    assert tax.parents("neutral") == ["ekman:neutral"]
    assert tax.parents("ekman:neutral") == ["sentiment:neutral"]
    assert tax.name("ekman:joy") == "joy" and "sentiment:neutral" in ix.ids


def test_goemotions_builder_rejects_split_group(tmp_path):
    labels, ekman, _ = _goemotions_maps(tmp_path)
    sent = write(tmp_path / "s2.json", json.dumps(
        {"positive": ["joy"], "negative": ["anger", "love", "sadness"]}))
    with pytest.raises(DataError, match="Ekman group 'joy' spans 2 sentiments"):
        goemotions_taxonomy(labels, ekman, sent)


# ---- statistics and CLI ---------------------------------------------------------------------
def test_dataset_stats(tmp_path):
    toml = _toml_dataset(tmp_path)
    ds = load_dataset(toml, data_dir=tmp_path / "shared")
    st = dataset_stats(ds, taxonomy_from_dataset(toml, data_dir=tmp_path / "shared"))
    tr = st["splits"]["train"]
    assert tr["samples"] == 4 and tr["labels_per_sample"] == {1: 3, 2: 1}
    assert tr["duplicate_texts"] == 1 and st["splits"]["test"]["texts_also_in_train"] == 0
    assert [lv["present"] for lv in tr["levels"]] == [2, 3] and tr["multi_branch_samples"] == 1
    assert st["long_tail"]["labels"] == 3 and st["long_tail"]["max"] == 2
    json.dumps(st)


def test_cli_stats_json(tmp_path):
    toml = _toml_dataset(tmp_path)
    root = typer.Typer()
    root.add_typer(data_app, name="data")
    runner = CliRunner()
    r = runner.invoke(root, ["data", "stats", str(toml), "--data-dir", str(tmp_path / "shared"),
                             "--json"])
    assert r.exit_code == 0, r.output
    st = json.loads(r.output)
    assert st["splits"]["train"]["samples"] == 4 and st["taxonomy_source"].startswith("derived")
    r = runner.invoke(root, ["data", "stats", str(toml), "--data-dir", str(tmp_path / "shared")])
    assert r.exit_code == 0 and "Labels per sample" in r.output
    write(tmp_path / "ds/train.jsonl", '{"body": "a", "tags": ["x/1"]}\nnot json\n')
    r = runner.invoke(root, ["data", "stats", str(toml), "--data-dir", str(tmp_path / "shared")])
    assert isinstance(r.exception, DataError) and "train.jsonl:2" in str(r.exception)
    r = runner.invoke(root, ["data", "stats", str(toml), "--data-dir", str(tmp_path / "shared"),
                             "--json", "--skip-errors"])
    assert json.loads(r.output)["splits"]["train"]["skipped_reasons"] == {"bad JSON": 1}


# ---- the real shared datasets (only where HMTC_DATA points at them) --------------------------
REAL = Path(os.environ.get("HMTC_DATA", "/nonexistent"))


@pytest.mark.skipif(not (REAL / "duee/multi-classification-train.txt").is_file(),
                    reason="HMTC_DATA does not point at the shared datasets")
def test_real_datasets():
    duee = load_dataset("duee")
    assert {k: len(v) for k, v in duee.splits.items()} == {"train": 11958, "test": 1498}
    st = dataset_stats(duee)
    assert st["splits"]["train"]["labels_per_sample"] == {1: 10837, 2: 1045, 3: 71, 4: 4, 5: 1}
    go = load_dataset("goemotions")
    assert {k: len(v) for k, v in go.splits.items()} == {"train": 43410, "dev": 5426, "test": 5427}
    encode_labels(go.splits["test"], taxonomy_from_dataset("goemotions"))
    ng = load_dataset("20newsgroups")
    assert {k: len(v) for k, v in ng.splits.items()} == {"train": 11314, "test": 7532}
    tax = taxonomy_from_dataset("20newsgroups")
    assert tax.stats()["depth"] == 5 and tax.stats()["leaves"] == 20
