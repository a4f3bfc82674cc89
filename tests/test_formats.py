"""The field's formats: HiAGM / HGCLR JSON lines and ``.taxonomy`` files (WOS, RCV1-V2, NYT),
``hmtc taxonomy import``, and the estimator on a Hugging Face ``datasets.Dataset``.

Every file is a few lines written here; ``datasets`` is replaced by a stand-in when missing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from typer.testing import CliRunner

from hmtc import HierarchicalClassifier
from hmtc.cli import app
from hmtc.config import RunConfig
from hmtc.data import encode_labels, load_dataset, read_hiagm, read_hiagm_taxonomy
from hmtc.data.prepare import taxonomy_for
from hmtc.errors import DataError, TaxonomyError
from hmtc.taxonomy import Taxonomy

from conftest import make_texts

runner = CliRunner()

# "Deep learning" sits under CS and under Medical, as WOS lists Depression under Medical and
# Psychology: two distinct nodes CS/Deep learning and Medical/Deep learning (a DAG with --merge-repeated)
TAXONOMY = "Root\tCS\tMedical\nCS\tMachine learning\tDeep learning\nMedical\tAlzheimer's Disease\tDeep learning\n"
TRAIN = [
    {"doc_token": ["kernel", "trick"], "doc_label": ["CS", "Machine learning"], "doc_topic": []},
    {"doc_token": "plaque and tau", "doc_label": ["Medical", "Alzheimer's Disease"]},
    {"doc_token": ["deep", "nets", "for", "scans"], "doc_label": ["Medical", "Deep learning"]},
]


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """HMTC_HOME in tmp_path: the converted taxonomies land there, not in ~/.cache."""
    monkeypatch.setenv("HMTC_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def card(folder: Path) -> Path:
    """A WOS-like dataset in the HiAGM layout with its TOML card."""
    write(folder / "wos.taxonomy", TAXONOMY)
    write(folder / "wos_train.json", jsonl(TRAIN))
    write(folder / "wos_test.json", jsonl([{"token": ["tau"], "label": ["Medical"]}]))
    return write(folder / "wos.toml", 'name = "wos"\nformat = "hiagm"\ntaxonomy = "wos.taxonomy"\n'
                 '[splits]\ntrain = "wos_train.json"\ntest = "wos_test.json"\n')


# ---- reading ---------------------------------------------------------------------------------
def test_read_hiagm_both_key_spellings(tmp_path):
    f = write(tmp_path / "d.json", jsonl([
        {"doc_token": ["the", "kernel", "trick"], "doc_label": ["CS", "Machine learning"]},
        {"token": ["plaque", "and", "tau"], "label": ["Medical"]},
        {"token": "already a string", "doc_label": "CS"},
    ]) + "\n")
    ex = read_hiagm(f)
    assert ex.texts == ["the kernel trick", "plaque and tau", "already a string"]
    assert ex.labels == [["CS", "Machine learning"], ["Medical"], ["CS"]]
    assert ex.sources == [f"{f}:1", f"{f}:2", f"{f}:3"]


@pytest.mark.parametrize("row, words", [
    ({"text": "a", "label": ["CS"]}, "one of the keys 'token' or 'doc_token', found neither"),
    ({"token": "a", "doc_token": "b", "label": ["CS"]}, "found 'token' and 'doc_token'"),
    ({"token": [1, 2], "label": ["CS"]}, "'token' must be a string or a list of strings"),
    ({"token": [], "label": ["CS"]}, "empty text"),
    ({"token": "a", "doc_label": [3]}, "'doc_label' must be a string or a list of strings"),
    ({"token": "a", "label": []}, "no labels"),
])
def test_read_hiagm_bad_rows_name_file_and_line(tmp_path, row, words):
    f = write(tmp_path / "d.json", jsonl([{"token": "ok", "label": ["CS"]}, row]))
    with pytest.raises(DataError, match=words) as e:
        read_hiagm(f)
    assert str(e.value).startswith(f"{f}:2: ") and "\n" not in str(e.value)
    assert read_hiagm(f, on_error="skip").texts == ["ok"]


def test_hiagm_taxonomy_keeps_repeated_names_apart_in_file_order(tmp_path):
    src = write(tmp_path / "wos.taxonomy", TAXONOMY.replace("\n", " \r\n", 1))
    tax = read_hiagm_taxonomy(src)
    assert tax.root == "Root" and tax.path is None        # never saved over the .taxonomy by mistake
    assert tax.children("Root") == ["CS", "Medical"]
    assert tax.children("CS") == ["Machine learning", "CS/Deep learning"]
    assert tax.children("Medical") == ["Alzheimer's Disease", "Medical/Deep learning"]
    assert tax.name("CS/Deep learning") == tax.name("Medical/Deep learning") == "Deep learning"
    assert "Deep learning" not in tax and tax.is_tree and tax.stats()["per_level"] == [2, 4]
    merged = read_hiagm_taxonomy(src, merge_repeated=True)  # the earlier reading: one node, two parents
    assert merged.children("CS") == ["Machine learning", "Deep learning"]
    assert merged.parents("Deep learning") == ["CS", "Medical"] and not merged.is_tree
    assert merged.stats()["per_level"] == [2, 3]


@pytest.mark.parametrize("content, line, words", [
    ("Root\tCS\tMedical\nCS\tDL\nMedical\tDL\nDL\tCNN\n", 4, "'DL' is listed under 2 parents and heads a line"),
    ("Root\tCS\tMedical\tCS/DL\nCS\tDL\nMedical\tDL\n", None, "would become the node 'CS/DL'"),
])
def test_repeated_names_that_cannot_be_kept_apart(tmp_path, content, line, words):
    src = write(tmp_path / "bad.taxonomy", content)
    with pytest.raises(TaxonomyError, match=words) as e:
        read_hiagm_taxonomy(src)
    assert str(e.value).startswith(f"{src}:{line}: " if line else f"{src}: ")
    assert read_hiagm_taxonomy(src, merge_repeated=True).parents("DL") == ["CS", "Medical"]


# ---- hmtc taxonomy import --------------------------------------------------------------------
def test_cli_import_round_trip(tmp_path):
    src = write(tmp_path / "wos.taxonomy", TAXONOMY)
    out = tmp_path / "wos.tax"
    r = runner.invoke(app, ["taxonomy", "import", str(src), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "imported 6 nodes (tree; 2 nodes for names listed under several parents, ids PARENT/NAME)" \
        in " ".join(r.stdout.split())
    tax = Taxonomy.load(out)
    tax.validate()
    assert tax.dumps() == out.read_text(encoding="utf-8")             # canonical form
    assert '    CS/Deep learning "Deep learning"\n' in out.read_text(encoding="utf-8")   # the name kept
    assert {n: tax.parents(n) for n in tax.nodes} == {
        "CS": [], "Medical": [], "Machine learning": ["CS"], "CS/Deep learning": ["CS"],
        "Alzheimer's Disease": ["Medical"], "Medical/Deep learning": ["Medical"]}
    merged = tmp_path / "merged.tax"
    r = runner.invoke(app, ["taxonomy", "import", str(src), "-o", str(merged), "--merge-repeated"])
    assert r.exit_code == 0 and "imported 5 nodes (DAG, 1 nodes with several parents)" in " ".join(r.stdout.split())
    assert "    &Deep learning\n" in merged.read_text(encoding="utf-8")  # the second parent, as a reference
    assert runner.invoke(app, ["taxonomy", "validate", str(out)]).exit_code == 0
    first = out.read_bytes()
    with pytest.raises(TaxonomyError, match="exists; pass --force") as e:
        runner.invoke(app, ["taxonomy", "import", str(src), "-o", str(out)], catch_exceptions=False)
    assert str(e.value).startswith(str(out))
    write(src, TAXONOMY + "Machine learning\tSVM\n")
    assert runner.invoke(app, ["taxonomy", "import", str(src), "-o", str(out), "--force"]).exit_code == 0
    assert out.read_bytes() != first and Taxonomy.load(out).parents("SVM") == ["Machine learning"]
    assert not list(tmp_path.glob(".*tmp"))                           # written atomically, nothing aside
    r = runner.invoke(app, ["taxonomy", "import", str(src)])
    assert r.exit_code == 0 and r.stdout == Taxonomy.load(out).dumps()   # no -o: stdout
    with pytest.raises(TaxonomyError, match="OUT is the source file"):
        runner.invoke(app, ["taxonomy", "import", str(src), "-o", str(src), "--force"], catch_exceptions=False)
    assert src.read_text(encoding="utf-8").startswith("Root\t")


BAD_TAXONOMIES = {                       # name: (content, bad line or None, words)
    "no child": ("Root\tCS\nCS\n", 2, "'CS' has no child"),
    "empty name": ("Root\tCS\t\tMedical\n", 1, "empty name in field 3"),
    "cycle": ("Root\tCS\nCS\tML\nML\tCS\n", 3, "cycle: "),
    "self-loop": ("Root\tCS\nCS\tCS\n", 2, "self-loop"),
    "second line for a parent": ("Root\tCS\nCS\tML\nCS\tCV\n", 3, "'CS' already heads line 2"),
    "child twice": ("Root\tCS\nCS\tML\tML\n", 2, "'ML' is listed twice under 'CS'"),
    "root as a child": ("Root\tCS\nCS\tRoot\n", 2, "'Root' is the root"),
    "parent under no node": ("Root\tCS\nBio\tGenes\n", 2, "'Bio' heads a line but is listed under no node"),
    "invalid id": ('Root\tCS\nCS\tsay "hi"\n', 2, "invalid id"),
    "bad byte": (b"Root\tCS\nCS\tM\xe9decine\n", 2, "not valid utf-8"),
    "no root": ("CS\tML\n", None, "no line for the root"),
}


@pytest.mark.parametrize("case", BAD_TAXONOMIES)
def test_bad_taxonomy_names_file_and_line(tmp_path, case, capsys, monkeypatch):
    content, line, words = BAD_TAXONOMIES[case]
    src = write(tmp_path / "bad.taxonomy", content)
    with pytest.raises(TaxonomyError, match=words) as e:
        read_hiagm_taxonomy(src)
    where = f"{src}:{line}: " if line else f"{src}: "
    assert str(e.value).startswith(where) and "\n" not in str(e.value)
    from hmtc.cli import main
    monkeypatch.setattr("sys.argv", ["hmtc", "taxonomy", "import", str(src), "-o", str(tmp_path / "out.tax")])
    with pytest.raises(SystemExit) as code:
        main()
    err = capsys.readouterr().err
    assert code.value.code == 2 and where.strip() in err and "Traceback" not in err
    assert not (tmp_path / "out.tax").exists()


# ---- a dataset card in the format --------------------------------------------------------------
def test_card_loads_with_the_taxonomy_converted(tmp_path, home):
    toml = card(tmp_path / "wos")
    ds = load_dataset(toml)
    assert ds.taxonomy_path.parent == home / "taxonomies" and ds.taxonomy_path.suffix == ".tax"
    assert load_dataset(toml, splits=[]).taxonomy_path == ds.taxonomy_path     # converted once
    tax = Taxonomy.load(ds.taxonomy_path)
    ix = tax.compile()
    assert ix.ids == ("CS", "Medical", "Machine learning", "CS/Deep learning", "Alzheimer's Disease",
                      "Medical/Deep learning")
    y = encode_labels(ds.splits["train"], tax)
    # "Deep learning" listed with Medical is Medical's: closing the set under ancestors adds no CS
    assert y.astype(int).tolist() == [[1, 0, 1, 0, 0, 0], [0, 1, 0, 0, 1, 0], [0, 1, 0, 0, 0, 1]]
    assert encode_labels(ds.splits["test"], tax).astype(int).tolist() == [[0, 1, 0, 0, 0, 0]]
    assert ds.splits["train"].texts[2] == "deep nets for scans"
    # the training path loads it the same way
    cfg = RunConfig.from_dict({"data": {"taxonomy": "", "dataset": str(toml), "data_dir": ""}})
    assert taxonomy_for(cfg).dumps() == tax.dumps()
    # an edited .taxonomy gets a new conversion
    write(tmp_path / "wos/wos.taxonomy", TAXONOMY + "Machine learning\tSVM\n")
    assert load_dataset(toml, splits=[]).taxonomy_path != ds.taxonomy_path


def test_card_errors_name_file_and_line(tmp_path, home):
    toml = card(tmp_path / "wos")
    train = tmp_path / "wos/wos_train.json"
    write(train, jsonl(TRAIN[:1]) + '{"doc_token": ["a"], "doc_label": \n')
    with pytest.raises(DataError, match=r"bad JSON") as e:
        load_dataset(toml)
    assert str(e.value).startswith(f"{train}:2: ")
    write(train, jsonl(TRAIN + [{"doc_token": ["x"], "doc_label": ["CS", "Machine learnin"]}]))
    ds = load_dataset(toml)
    with pytest.raises(DataError, match="label 'Machine learnin' is not a taxonomy node; did you mean "
                                        "'Machine learning'") as e:
        encode_labels(ds.splits["train"], Taxonomy.load(ds.taxonomy_path))
    assert str(e.value).startswith(f"{train}:4: ")
    write(train, jsonl(TRAIN + [{"doc_token": ["x"], "doc_label": ["Deep learning"]}]))   # which parent's?
    with pytest.raises(DataError, match="label 'Deep learning' is not a taxonomy node; did you mean "
                                        "'(CS|Medical)/Deep learning', '(Medical|CS)/Deep learning'") as e:
        encode_labels(load_dataset(toml).splits["train"], Taxonomy.load(ds.taxonomy_path))
    assert str(e.value).startswith(f"{train}:4: ")
    tax_file = write(tmp_path / "wos/wos.taxonomy", "Root\tCS\nCS\n")
    with pytest.raises(TaxonomyError, match="'CS' has no child") as e:
        load_dataset(toml, splits=[])
    assert str(e.value).startswith(f"{tax_file}:2: ")
    tax_file.unlink()                       # a missing .taxonomy: "file not found" when it is loaded
    path = load_dataset(toml, splits=[]).taxonomy_path
    assert path == tax_file
    with pytest.raises(TaxonomyError, match="file not found"):
        Taxonomy.load(path)


# ---- the estimator on a Hugging Face Dataset ---------------------------------------------------
class _Column:
    """What ``datasets`` >= 4 returns for ``ds[column]``: iterable, but neither a list nor a Sequence."""

    def __init__(self, values):
        self._values = values

    def __iter__(self):
        return iter(self._values)

    def __len__(self):
        return len(self._values)


class _ClassLabel:
    def __init__(self, names):
        self.names = names


class _Sequence:
    def __init__(self, feature):
        self.feature = feature


class StandInDataset:
    """The part of ``datasets.Dataset`` the estimator uses: ``column_names``, ``ds[column]``, ``features``."""

    def __init__(self, columns: dict[str, list], features: dict | None = None):
        self._columns, self.features = columns, features or {}

    @property
    def column_names(self) -> list[str]:
        return list(self._columns)

    def __getitem__(self, key):
        if isinstance(key, str):
            return _Column(self._columns[key])
        return {c: v[key] for c, v in self._columns.items()}

    def __len__(self) -> int:
        return len(next(iter(self._columns.values())))


class StandInDatasetDict(dict):
    """``datasets.DatasetDict``: split name -> Dataset, its ``column_names`` a dict per split."""

    @property
    def column_names(self) -> dict[str, list[str]]:
        return {split: ds.column_names for split, ds in self.items()}


def hf_dataset(columns: dict[str, list], class_names: list[str] | None = None):
    """A ``datasets.Dataset`` when the package is installed, else the stand-in; ``class_names``
    makes ``tags`` a list-of-ClassLabel column of integer ids."""
    try:
        import datasets
    except ImportError:
        feats = {"tags": _Sequence(_ClassLabel(class_names))} if class_names else None
        return StandInDataset(columns, feats)
    feats = None
    if class_names:
        feats = datasets.Features({c: datasets.Value("string") for c in columns if c != "tags"}
                                  | {"tags": datasets.Sequence(datasets.ClassLabel(names=class_names))})
    return datasets.Dataset.from_dict(columns, features=feats)


def test_estimator_on_a_dataset(tiny_encoder, tmp_path):
    rows = make_texts(40, 3)
    paths = [[lab.replace("-", "/") for lab in r["labels"]] for r in rows]
    ds = hf_dataset({"body": [r["text"] for r in rows], "tags": paths, "id": list(range(40))})
    clf = HierarchicalClassifier("msml", str(tiny_encoder), epochs=1, batch_size=8, max_length=32,
                                 options={"filters": 16, "tower_dim": 32, "dropout": 0.0},
                                 config={"model": {"layers": [-1]}, "train": {"threads": 1}},
                                 dev_fraction=0.25, output_dir=tmp_path / "runs",
                                 text_column="body", label_column="tags")
    assert clf.get_params()["text_column"] == "body" and clone(clf).get_params()["label_column"] == "tags"
    with pytest.raises(DataError, match=r"no column 'text' \(parameter text_column\); its columns: 'body'"):
        clone(clf).set_params(text_column="text").fit(ds)
    with pytest.raises(DataError, match="no labels"):
        clone(clf).fit([r["text"] for r in rows])
    with pytest.raises(DataError, match=r"DatasetDict of the splits 'train': pass one split"):
        clone(clf).fit(StandInDatasetDict(train=ds))
    clf.fit(ds)
    texts = [r["text"] for r in rows[:5]]
    assert clf.predict(hf_dataset({"body": texts})) == clf.predict(texts)
    assert np.allclose(clf.predict_proba(hf_dataset({"body": texts})), clf.predict_proba(texts))
    assert clf.score(ds) == clf.score([r["text"] for r in rows], paths)
    # a label column of ClassLabel ids reads as the class names
    names = ["animal/cat", "animal/dog", "plant/rose", "plant/tree"]
    ids = hf_dataset({"body": texts, "tags": [[names.index(p) for p in ps] for ps in paths[:5]]}, names)
    assert clf.evaluate(ids) == clf.evaluate(texts, paths[:5])
    bad = hf_dataset({"body": texts[:1], "tags": [[7]]}, names)
    with pytest.raises(DataError, match=r"column 'tags': 7 is not a class id 0\.\.3"):
        clf.score(bad)
