"""Taxonomy: the text format, validation errors, compiled index, edits and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from hmtc.cli import app
from hmtc.errors import TaxonomyError
from hmtc.taxonomy import Taxonomy

ROOT = Path(__file__).resolve().parents[1]
TREE = """# a comment that must survive

ROOT
  a "Alpha"
    a-1
    a-2
  b
    b-1 "Bee one"
      b-1-x
"""
DAG = """ROOT
  a
    x "X"
  b
    &x
    y
"""
runner = CliRunner()


def write(tmp_path: Path, text: str, name: str = "t.tax") -> Path:
    p = tmp_path / name
    p.write_bytes(text.encode("utf-8"))
    return p


# ---- format ----------------------------------------------------------------------------
@pytest.mark.parametrize("text", [TREE, DAG])
def test_load_save_byte_identical(tmp_path, text):
    p = write(tmp_path, text)
    t = Taxonomy.load(p)
    out = tmp_path / "out.tax"
    t.save(out)
    assert out.read_bytes() == p.read_bytes()


@pytest.mark.parametrize("name", ["duee.tax", "goemotions.tax", "20newsgroups.tax"])
def test_shipped_taxonomies_round_trip(name):
    p = ROOT / "taxonomies" / name
    if not p.exists():
        pytest.skip(f"{name} not shipped yet")
    assert Taxonomy.load(p).dumps().encode("utf-8") == p.read_bytes()


def test_shipped_duee_shape():
    st_ = Taxonomy.load(ROOT / "taxonomies" / "duee.tax").stats()
    assert st_["per_level"] == [9, 65] and st_["is_tree"] and st_["leaves"] == 65


def test_names_and_structure():
    t = Taxonomy.parse(TREE)
    assert t.name("a") == "Alpha" and t.name("a-1") == "a-1"
    assert t.children("a") == ["a-1", "a-2"] and t.parents("b-1-x") == ["b-1"]
    assert t.stats()["per_level"] == [2, 3, 1]


@pytest.mark.parametrize("text, line, words", [
    ("ROOT\n  a\n  a\n", 3, "duplicate id 'a'"),
    ("ROOT\n  a\nOTHER\n", 3, "second root 'OTHER'"),
    ("ROOT\n  a\n    &a\n", 3, "self-loop"),
    ("ROOT\n  a\n    b\n      &a\n", 4, "cycle: a -> b -> a"),
    ("ROOT\n  a\n    &ghost\n", 3, "unknown node"),
    ("ROOT\n  a\n      b\n", 3, "indented 2 levels"),
    ("ROOT\n\ta\n", 2, "tab in indentation"),
    ("ROOT\n  a\tb\n", 2, "a tab or control character in id 'a\\tb'"),
    ("ROOT\n  a\n    b\x0bc \"name\"\n", 3, "a tab or control character in id"),
    ("ROOT\n   a\n", 2, "not a multiple of two"),
    ("  a\n", 1, "first node line must be the root"),
    ("ROOT\n  a\n    &b \"n\"\n  b\n", 3, "takes no display name"),
    ('ROOT\n  a "x\n', 2, "cannot read node line"),
    # descriptions (tests/test_descriptions.py has the rest)
    ("ROOT\n  a\n  > late\n", 3, "indented one level below its node"),
    ("ROOT\n  a\n    > one\n    > two\n", 4, "right after its node's line"),
    ("ROOT\n  a\n  # c\n    > d\n", 4, "right after its node's line"),
    ("ROOT\n  a\n  b\n    &a\n      > d\n", 5, "right after its node's line"),
    ("ROOT\n  a\n    >no space\n", 3, "one space after '>'"),
    ("ROOT\n  a\n    > trailing \n", 3, "no trailing spaces"),
    ("ROOT\n  a\n    >\n", 3, "one space after '>'"),
])
def test_invalid_files_name_file_line_and_node(tmp_path, text, line, words):
    p = write(tmp_path, text)
    with pytest.raises(TaxonomyError) as e:
        Taxonomy.load(p)
    assert e.value.line == line and e.value.path == str(p)
    assert words in str(e.value) and f"{p}:{line}:" in str(e.value)


def test_non_utf8_file(tmp_path):
    p = tmp_path / "bad.tax"
    p.write_bytes(b"ROOT\n  caf\xe9\n")
    with pytest.raises(TaxonomyError, match="not UTF-8"):
        Taxonomy.load(p)


# ---- compiled index ----------------------------------------------------------------------
def test_compile_tree():
    idx = Taxonomy.parse(TREE).compile()
    assert idx.ids == ("a", "b", "a-1", "a-2", "b-1", "b-1-x")
    assert idx.levels.tolist() == [1, 1, 2, 2, 2, 3]
    assert idx.parent.tolist() == [-1, -1, 0, 0, 1, 4]
    assert idx.leaf_mask.tolist() == [False, False, True, True, False, True]
    assert idx.level_slices == (slice(0, 2), slice(2, 5), slice(5, 6))
    anc = idx.ancestors
    assert np.flatnonzero(anc[5]).tolist() == [1, 4] and not anc[:2].any()
    y = idx.indicator([["b-1-x"], ["a-2"], []])
    assert idx.labels_of(y) == [["b", "b-1", "b-1-x"], ["a", "a-2"], []]


def test_compile_dag_levels_are_longest_paths():
    t = Taxonomy.parse("ROOT\n  a\n    b\n      x\n  c\n    &x\n")
    idx = t.compile()
    assert dict(zip(idx.ids, idx.levels.tolist())) == {"a": 1, "c": 1, "b": 2, "x": 3}
    x = idx.id_to_index["x"]
    assert sorted(idx.ids[p] for p in idx.parents_padded[x] if p >= 0) == ["b", "c"]
    assert not idx.is_tree
    assert {idx.ids[j] for j in np.flatnonzero(idx.ancestors[x])} == {"a", "b", "c"}


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.sampled_from("abc"), min_size=1, max_size=4), min_size=1, max_size=20))
def test_from_paths_round_trip_and_closure(paths):
    labels = ["-".join(p) for p in paths]
    t = Taxonomy.from_paths(labels, sep="-")
    assert Taxonomy.parse(t.dumps()).dumps() == t.dumps()
    idx = t.compile()
    y = idx.indicator([[lab] for lab in labels])
    # closed under ancestors: every positive node's parent is positive too
    rows, cols = np.nonzero(y)
    par = idx.parent[cols]
    assert all(p < 0 or y[r, p] for r, p in zip(rows, par))
    assert (y.sum(1) == np.array([len(p) for p in paths])).all()


def test_from_paths_duee_style_first_separator_only():
    t = Taxonomy.from_paths(["灾害/意外-坍/垮塌", "人生-产子/女"], sep="-", maxsplit=1)
    assert t.parents("灾害/意外-坍/垮塌") == ["灾害/意外"] and t.name("灾害/意外-坍/垮塌") == "坍/垮塌"


# ---- edits (API) -------------------------------------------------------------------------
def test_edits_return_new_taxonomies():
    t = Taxonomy.parse(TREE)
    t2 = t.add("c", name="Sea")
    assert "c" in t2 and "c" not in t
    assert t.remove("b", "reparent").parents("b-1") == []  # now level 1
    assert "b-1-x" not in t.remove("b", "subtree")
    r = t.rename("a", "A")
    assert r.children("A") == ["a-1", "a-2"] and r.dumps().index("A") < r.dumps().index("b")
    m = t.move("b-1", "a")
    assert m.parents("b-1") == ["a"] and m.children("b") == []
    k = t.move("b-1", "a", keep_parents=True)
    assert sorted(k.parents("b-1")) == ["a", "b"] and not k.is_tree
    g = t.merge("a-2", "a-1")
    assert "a-2" not in g and g.children("a") == ["a-1"]


def test_remove_subtree_keeps_nodes_with_other_parents():
    t = Taxonomy.parse(DAG)
    out = t.remove("a", "subtree")
    assert "x" in out and out.parents("x") == ["b"]


@pytest.mark.parametrize("edit, words", [
    (lambda t: t.add("a"), "duplicate id"),
    (lambda t: t.add("z", "nope"), "unknown parent 'nope'"),
    (lambda t: t.remove("a"), "has 2 children"),
    (lambda t: t.remove("ghost"), "unknown node"),
    (lambda t: t.move("a", "a-1"), "cycle"),
    (lambda t: t.rename("a", "b"), "duplicate id 'b'"),
    (lambda t: t.merge("a", "a-1"), "ancestor or descendant"),
    (lambda t: t.add('bad"id'), "invalid id"),
])
def test_invalid_edits_raise(edit, words):
    with pytest.raises(TaxonomyError, match=words):
        edit(Taxonomy.parse(TREE))


# ---- CLI ---------------------------------------------------------------------------------
def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_cli_stats_json_and_show(tmp_path):
    p = write(tmp_path, TREE)
    r = cli("taxonomy", "stats", p, "--json")
    assert r.exit_code == 0
    data = json.loads(r.stdout)
    assert data["per_level"] == [2, 3, 1] and data["nodes"] == 6 and data["leaves"] == 3 and data["is_tree"]
    r = cli("taxonomy", "show", p)
    assert r.exit_code == 0 and "Alpha" in r.stdout and "L1=2" in r.stdout
    assert cli("taxonomy", "validate", p).exit_code == 0


@pytest.mark.parametrize("args", [
    ["add", "c", "--parent", "a"],
    ["remove", "a-1"],
    ["remove", "a", "--reparent"],
    ["remove", "b", "--subtree"],
    ["rename", "a", "A", "--name", "Ay"],
    ["move", "b-1", "a"],
    ["merge", "a-2", "a-1"],
])
def test_cli_edits_dry_run_then_apply(tmp_path, args):
    p = write(tmp_path, TREE)
    before = p.read_bytes()
    r = cli("taxonomy", args[0], p, *args[1:], "--dry-run")
    assert r.exit_code == 0, r.output
    assert "dry run: file unchanged" in r.stdout and r.stdout.startswith("---")
    assert p.read_bytes() == before
    r = cli("taxonomy", args[0], p, *args[1:])
    assert r.exit_code == 0, r.output
    assert p.read_bytes() != before
    Taxonomy.load(p)                         # still valid
    assert "# a comment that must survive" in p.read_text(encoding="utf-8")
    assert not list(tmp_path.glob(".*tmp"))  # nothing left aside


@pytest.mark.parametrize("args, words", [
    (["add", "a"], "duplicate id"),
    (["add", "z", "--parent", "nope"], "unknown parent"),
    (["remove", "a"], "has 2 children"),
    (["move", "a", "a-1"], "cycle"),
    (["rename", "a", "b"], "duplicate id"),
    (["merge", "a", "a-1"], "ancestor or descendant"),
])
def test_cli_refuses_invalid_edits_and_leaves_file(tmp_path, args, words):
    p = write(tmp_path, TREE)
    before = p.read_bytes()
    with pytest.raises(TaxonomyError, match=words) as e:
        runner.invoke(app, ["taxonomy", args[0], str(p), *args[1:]], catch_exceptions=False)
    assert str(p) in str(e.value)
    assert p.read_bytes() == before


def test_main_prints_clear_error_and_exit_code(tmp_path, capsys, monkeypatch):
    from hmtc.cli import main
    p = write(tmp_path, "ROOT\n  a\n  a\n")
    monkeypatch.setattr("sys.argv", ["hmtc", "taxonomy", "validate", str(p)])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"{p}:3" in err and "duplicate id" in err and "Traceback" not in err


def test_cli_diff(tmp_path):
    a = write(tmp_path, TREE, "a.tax")
    b = write(tmp_path, TREE.replace("    a-2\n", "").replace("  b\n", "  b\n    c\n"), "b.tax")
    r = cli("taxonomy", "diff", a, b)
    assert r.exit_code == 1
    assert "+ c" in r.stdout and "- a-2" in r.stdout
    assert cli("taxonomy", "diff", a, a).exit_code == 0


def test_cli_from_labels_rebuilds_file(tmp_path):
    lines = tmp_path / "labels.txt"
    lines.write_text("x.y.z\nx.w\nq\n", encoding="utf-8")
    out = tmp_path / "out.tax"
    assert cli("taxonomy", "from-labels", lines, "--format", "lines", "--sep", ".", "-o", out).exit_code == 0
    first = out.read_bytes()
    assert Taxonomy.load(out).stats()["per_level"] == [2, 2, 1]
    with pytest.raises(TaxonomyError, match="exists"):
        runner.invoke(app, ["taxonomy", "from-labels", str(lines), "--format", "lines", "--sep", ".",
                            "-o", str(out)], catch_exceptions=False)
    r = cli("taxonomy", "from-labels", lines, "--format", "lines", "--sep", ".", "-o", out, "--dry-run")
    assert "(no change)" in r.stdout and out.read_bytes() == first


def test_compile_cache_follows_in_place_graph_edits():
    tax = Taxonomy.parse("ROOT\n  a\n    a1\n  b\n    b1\n")
    first = tax.compile()
    assert tax.compile() is first                           # unchanged graph: the cached index
    tax.graph.remove_edge("a", "a1")
    tax.graph.add_edge("b", "a1")                           # same node and edge counts
    moved = tax.compile()
    assert moved.parent[moved.id_to_index["a1"]] == moved.id_to_index["b"]
    tax.graph.nodes["b1"]["name"] = "renamed"
    assert tax.compile().names[tax.compile().id_to_index["b1"]] == "renamed"
