"""20 Newsgroups cleaning: scikit-learn's three removals, the reader option and the protocol it records.

Every post is written here; scikit-learn's own functions are the reference the removals must equal.
"""

from __future__ import annotations

import io
import itertools
import re
import tarfile
from pathlib import Path

import pytest

from hmtc.data.catalog import dataset_protocol, get_spec, load_dataset
from hmtc.data.readers import (NEWSGROUP_REMOVALS, read_class_folders, strip_newsgroup_footer,
                               strip_newsgroup_header, strip_newsgroup_quoting)
from hmtc.errors import DataError

POST = """From: jd@cs.example.edu (John Doe)
Subject: Re: orbit of the moon
Organization: Example University
Lines: 12

In article <1993Apr5.1234@example.com> ann@example.com (Ann) writes:
> The moon is made of cheese.
|> Quoted twice.

It is not. My brother said: it is rock.
Rock, mostly.

--
John Doe     | sci.space forever
jd@cs.example.edu
"""

POSTS = {
    "full": POST,
    "no blank line": "From: a@b\nSubject: only headers\nno body at all\n",
    "hyphen footer": "From: a@b\n\nbody line one\nbody line two\n-----\nsig\n",
    "blank first line": "\nbody right away\n> quoted\nwrote: nothing\n",
    "footer at the top": "  \n\nonly one paragraph\nand no signature\n",
    "Quoted from": "From: x\n\nQuoted from the FAQ:\nnot quoted: a|b > c\n  > indented is kept\n",
    "empty": "",
    "whitespace only": " \n \n",
    "trailing blank lines": "From: x\n\nthe text\n\n\n\n",
}


def sklearn_removals():
    """scikit-learn's functions by removal name (imported here only: they are private to it)."""
    from sklearn.datasets import _twenty_newsgroups as sk
    return {"headers": sk.strip_newsgroup_header, "footers": sk.strip_newsgroup_footer,
            "quotes": sk.strip_newsgroup_quoting}


def sklearn_clean(text: str, remove) -> str:
    """``fetch_20newsgroups(remove=remove)`` on one text: headers, footers, quotes in that order."""
    sk = sklearn_removals()
    for name in ("headers", "footers", "quotes"):
        if name in remove:
            text = sk[name](text)
    return text


ALL_SUBSETS = [list(c) for n in range(4) for c in itertools.combinations(NEWSGROUP_REMOVALS, n)]


@pytest.mark.parametrize("post", POSTS, ids=list(POSTS))
def test_each_removal_matches_sklearn(post):
    sk = sklearn_removals()
    for name, ours in NEWSGROUP_REMOVALS.items():
        for text in (POSTS[post], POSTS[post].rstrip("\n")):    # with and without the final newline
            assert ours(text) == sk[name](text), (name, text)


def test_removals_do_what_the_rules_say():
    # pinned by hand, so that a change in scikit-learn cannot make the comparison vacuous
    body = strip_newsgroup_header(POST)
    assert body.startswith("In article") and "Subject:" not in body
    assert strip_newsgroup_footer(body) == (
        "In article <1993Apr5.1234@example.com> ann@example.com (Ann) writes:\n"
        "> The moon is made of cheese.\n|> Quoted twice.\n\n"
        "It is not. My brother said: it is rock.\nRock, mostly.\n")   # cut at the last separator, "--"
    assert strip_newsgroup_quoting(strip_newsgroup_footer(body)) == "\nRock, mostly.\n"
    assert strip_newsgroup_header(POSTS["no blank line"]) == ""
    assert strip_newsgroup_footer("no separator\nat all\n") == "no separator\nat all\n"   # returned as is
    assert strip_newsgroup_quoting(POSTS["Quoted from"]).split("\n")[2:4] == [
        "not quoted: a|b > c", "  > indented is kept"]


def _write_corpus(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """The posts as a class-folder tree and as a tar.gz of it; the member -> content map."""
    files = {f"news-train/{'sci.space' if i % 2 else 'alt.atheism'}/{i}": text
             for i, text in enumerate(POSTS.values()) if text.strip()}
    files["news-test/sci.space/99"] = POST
    for name, text in files.items():
        path = tmp_path / "tree" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    tgz = tmp_path / "news.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return tmp_path / "tree", tgz, files


@pytest.mark.parametrize("remove", ALL_SUBSETS, ids=lambda r: ",".join(r) or "none")
def test_reader_applies_removals_like_sklearn(tmp_path, remove):
    tree, tgz, files = _write_corpus(tmp_path)
    for src in (tree, tgz):
        raw = read_class_folders(src, split="train")
        ex = read_class_folders(src, split="train", remove=list(reversed(remove)))   # order given: irrelevant
        assert ex.sources == raw.sources and ex.labels == raw.labels     # the same samples, empties kept
        for text, source in zip(ex.texts, ex.sources):
            content = files[source[len(str(src)) + 1:]]
            # hmtc's text is the file without its final newline; scikit-learn's keeps it
            assert sklearn_clean(content, remove) in (text, text + "\n")
            assert text == sklearn_clean(content.removesuffix("\n"), remove)


def test_reader_keeps_posts_the_removals_empty_but_not_empty_files(tmp_path):
    tree, _, _ = _write_corpus(tmp_path)
    ex = read_class_folders(tree, split="train", remove=["headers"])
    assert "" in ex.texts                       # the post with no blank line: all headers
    (tree / "news-train/sci.space/empty").write_text("\n", encoding="utf-8")
    with pytest.raises(DataError, match="empty text"):
        read_class_folders(tree, split="train", remove=["headers"])


def test_reader_rejects_unknown_removal(tmp_path):
    with pytest.raises(DataError) as e:
        read_class_folders(tmp_path / "missing", remove=["headers", "signatures"])
    assert str(e.value) == (f"{tmp_path}/missing: unknown removal 'signatures' in 'remove'; "
                            "one of headers, footers, quotes")
    with pytest.raises(DataError, match="'remove' must be a list of names"):
        read_class_folders(tmp_path, remove="headers")


CARD = """
name = "news-clean"
format = "class_folders"
taxonomy = "news.tax"
{remove}
[splits]
train = {{ path = "news.tar.gz", split = "train" }}
test = {{ path = "news.tar.gz", split = "test"{test_extra} }}
"""


def _card(tmp_path: Path, remove: str, test_extra: str = "") -> Path:
    card = tmp_path / "news.toml"
    card.write_text(CARD.format(remove=remove, test_extra=test_extra), encoding="utf-8")
    return card


def test_card_remove_option_and_protocol(tmp_path):
    _, tgz, _ = _write_corpus(tmp_path)
    card = _card(tmp_path, 'remove = ["quotes", "headers", "footers"]')
    ds = load_dataset(card)
    assert ds.protocol == ds.spec.protocol == "remove=headers,footers,quotes"
    assert ds.splits["test"].texts == ["\nRock, mostly.\n"]
    cleaned = read_class_folders(tgz, split="train", remove=list(NEWSGROUP_REMOVALS))
    assert ds.splits["train"].texts == cleaned.texts
    assert get_spec(_card(tmp_path, "")).protocol == "raw"
    assert get_spec(_card(tmp_path, "remove = []")).protocol == "raw"
    mixed = get_spec(_card(tmp_path, 'remove = ["headers"]', ', remove = []'))
    assert mixed.protocol == "train: remove=headers; test: raw"


def test_card_with_unknown_removal_names_the_card(tmp_path):
    card = _card(tmp_path, 'remove = ["headers", "sig"]')
    with pytest.raises(DataError) as e:
        load_dataset(card)
    assert str(e.value) == f"{card}: unknown removal 'sig' in 'remove'; one of headers, footers, quotes"
    with pytest.raises(DataError, match="^" + re.escape(f"{card}: unknown removal 'Quotes'")):
        get_spec(_card(tmp_path, "", ', remove = ["Quotes"]'))
    with pytest.raises(DataError, match="^" + re.escape(f"{card}: 'remove' must be a list")):
        get_spec(_card(tmp_path, "remove = 3"))


def test_builtin_with_run_options(tmp_path):
    (tmp_path / "20newsgroups").mkdir()
    _, tgz, _ = _write_corpus(tmp_path)
    tgz.rename(tmp_path / "20newsgroups" / "20news-bydate.tar.gz")
    raw = load_dataset("20newsgroups", data_dir=tmp_path, splits=["test"])
    assert raw.protocol == "raw" and raw.splits["test"].texts == [POST.removesuffix("\n")]
    options = {"remove": ["headers", "footers", "quotes"]}
    ds = load_dataset("20newsgroups", data_dir=tmp_path, splits=["test"], options=options)
    assert ds.splits["test"].texts == ["\nRock, mostly.\n"]
    assert ds.protocol == dataset_protocol("20newsgroups", options) == "remove=headers,footers,quotes"
    assert ds.spec.splits["test"].options == {"split": "test"}           # the split option still applies
    assert dataset_protocol("20newsgroups") == dataset_protocol("duee") == "raw"
    with pytest.raises(DataError) as e:
        load_dataset("20newsgroups", data_dir=tmp_path, options={"remove": ["header"]})
    assert str(e.value) == ("options for dataset '20newsgroups': unknown removal 'header' in 'remove'; "
                            "one of headers, footers, quotes")
    with pytest.raises(DataError, match="options for dataset 'duee': unknown option 'remove'"):
        dataset_protocol("duee", options)
