"""Node descriptions in .tax files: the syntax, byte-identical round trips through every edit,
errors naming the line, the compiled index and the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from hmtc.cli import app
from hmtc.errors import TaxonomyError
from hmtc.taxonomy import Taxonomy

DESCRIBED = """# events
ROOT
  > every event type
  life "人生"
    > what happens to a person: "birth", death, & marriage !exclusive
    life-death "死亡"
      > someone dies, is killed or found dead
    life-birth
  trade "交易" !exclusive
    > buying # selling
    trade-buy
      > someone buys something
    &life-birth
"""
runner = CliRunner()


def test_round_trip_byte_identical_and_read(tmp_path):
    t = Taxonomy.parse(DESCRIBED)
    assert t.dumps() == DESCRIBED
    assert t.description("life") == 'what happens to a person: "birth", death, & marriage !exclusive'
    assert t.description("trade") == "buying # selling" and t.is_exclusive("trade")
    assert t.description(t.root) == "every event type" and t.description("life-birth") == ""
    index = t.compile()
    assert index.descriptions[index.id_to_index["life-death"]] == "someone dies, is killed or found dead"
    assert index.descriptions[index.id_to_index["life-birth"]] == ""
    p = tmp_path / "d.tax"
    p.write_text(DESCRIBED, encoding="utf-8")
    t.save(p)
    assert p.read_text(encoding="utf-8") == DESCRIBED


EDITS = [
    lambda t: t.add("life-work", "life", "工作", description="someone starts a job"),
    lambda t: t.rename("life-death", "life-end"),
    lambda t: t.rename("life", name="生活"),
    lambda t: t.move("trade-buy", "life"),
    lambda t: t.move("life-death", "trade", keep_parents=True),
    lambda t: t.merge("life-birth", "life-death"),
    lambda t: t.remove("life-birth"),
    lambda t: t.set_exclusive("life"),
]


@pytest.mark.parametrize("edit", EDITS)
def test_every_edit_keeps_descriptions_and_round_trips(edit):
    before = Taxonomy.parse(DESCRIBED)
    after = edit(before)
    text = after.dumps()
    assert Taxonomy.parse(text).dumps() == text          # canonical, byte-identical again
    for node in before.nodes:
        new = "life-end" if node == "life-death" and "life-end" in after else node
        if new in after:
            assert after.description(new) == before.description(node)


def test_add_rename_merge_set_descriptions():
    t = Taxonomy.parse(DESCRIBED)
    assert t.add("x", description="an x").description("x") == "an x"
    assert t.rename("life-birth", description="a child is born").description("life-birth") == "a child is born"
    assert t.rename("life-death", description="").description("life-death") == ""
    merged = t.merge("life-death", "life-birth")       # the target had none: it takes the source's
    assert merged.description("life-birth") == "someone dies, is killed or found dead"
    assert t.merge("trade-buy", "life-death").description("life-death") == "someone dies, is killed or found dead"
    changes = t.diff(t.rename("trade", description="goods change hands"))
    assert changes == ["~ trade: description 'buying # selling' -> 'goods change hands'"]


@pytest.mark.parametrize("edit, words", [
    (lambda t: t.add(">x"), "no leading &, # or >"),
    (lambda t: t.add("x", description="two\nlines"), "invalid description"),
    (lambda t: t.rename("life", description=" padded"), "invalid description"),
])
def test_invalid_description_edits_raise(edit, words):
    with pytest.raises(TaxonomyError, match=words):
        edit(Taxonomy.parse(DESCRIBED))


def test_cli_add_and_rename_descriptions(tmp_path):
    p = tmp_path / "d.tax"
    p.write_text(DESCRIBED, encoding="utf-8")
    r = runner.invoke(app, ["taxonomy", "add", str(p), "life-work", "-p", "life", "--description", "starts a job"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["taxonomy", "rename", str(p), "trade", "--description", "goods change hands"])
    assert r.exit_code == 0, r.output
    t = Taxonomy.load(p)
    assert t.description("life-work") == "starts a job" and t.description("trade") == "goods change hands"
    assert "    > starts a job\n" in Path(p).read_text(encoding="utf-8")
