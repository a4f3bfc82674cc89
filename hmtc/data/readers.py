"""Readers for labelled text corpora; each returns :class:`Examples` with raw label strings.

:func:`read_hiagm_taxonomy` reads the ``.taxonomy`` file that goes with :func:`read_hiagm` data.

Every reader reads bytes and decodes line by line, so a bad byte, a malformed line or an
empty text is reported as ``file:line``. With ``on_error="raise"`` (the default) the first
problem raises :class:`~hmtc.errors.DataError`; with ``on_error="skip"`` the sample is
dropped and counted in ``Examples.skipped_reasons``. Blank lines are not samples and are
passed over silently. Lines end at ``"\\n"`` only (a trailing ``"\\r"`` is stripped), so a
stray carriage return inside a text stays part of it.

A label with a class (``docs/label-classes.md``) is written ``label:class`` (``joy:weak``,
``怒:2``) in any reader: one raw string, the id of the class node, which
:func:`hmtc.data.catalog.encode_labels` checks against the taxonomy (a label without its class
or an unknown class is an error naming ``file:line`` there). A table's ``label_names`` map the
id part of ``id:class``.
"""

from __future__ import annotations

import csv
import functools
import json
import re
import tarfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx

from ..errors import DataError, TaxonomyError
from ..label_classes import CLASS_SEP
from ..taxonomy import Taxonomy

ON_ERROR = ("raise", "skip")


@dataclass
class Examples:
    """Samples of one split.

    Attributes
    ----------
    texts : list of str
    labels : list of list of str
        Raw label strings as written in the file (after any id -> name mapping).
    sources : list of str
        Where each sample came from: ``"file:line"`` or, for folder corpora, the file.
    skipped : int
        Samples dropped with ``on_error="skip"``.
    skipped_reasons : Counter
        Dropped samples (and, after ``encode_labels``, dropped labels) by reason.
    """

    texts: list[str] = field(default_factory=list)
    labels: list[list[str]] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    skipped: int = 0
    skipped_reasons: Counter = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.texts)

    def add(self, text: str, labels: list[str], source: str) -> None:
        self.texts.append(text)
        self.labels.append(labels)
        self.sources.append(source)

    def subset(self, indices: Sequence[int]) -> "Examples":
        """The samples at ``indices``, in that order; skip counts are not carried over."""
        return Examples([self.texts[i] for i in indices], [self.labels[i] for i in indices],
                        [self.sources[i] for i in indices])


class _Bad(Exception):
    """One bad sample: ``reason`` is the short key counted in skip mode."""

    def __init__(self, reason: str, message: str | None = None):
        super().__init__(message or reason)
        self.reason, self.message = reason, message or reason


def check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, not {on_error!r}")


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError("file not found", path) from None
    except IsADirectoryError:
        raise DataError("is a folder, expected a file", path) from None


def _split_lines(data: bytes) -> list[bytes]:
    """Raw lines split at ``"\\n"`` only; a UTF-8 BOM is not part of the first field."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


def _decode(raw: bytes, encoding: str = "utf-8") -> str:
    try:
        line = raw.decode(encoding)
    except UnicodeDecodeError as e:
        raise _Bad("bad encoding", f"not valid {encoding} (byte {e.start + 1} of the line: "
                   f"{raw[e.start:e.start + 1]!r})") from None
    return line[:-1] if line.endswith("\r") else line


def _read_lines(path: str | Path, parse: Callable[[str, int], tuple[str, list[str]] | None],
                on_error: str) -> Examples:
    """Run ``parse(line, no) -> (text, labels)`` (or None to pass over) on each line."""
    def sample(raw: bytes, no: int):
        line = _decode(raw)
        return parse(line, no) if line.strip() else None

    path = Path(path)
    return _gather(path, ((no, functools.partial(sample, raw, no))
                          for no, raw in enumerate(_split_lines(_read_bytes(path)), 1)), on_error)


def _gather(path: Path, entries, on_error: str) -> Examples:
    """Examples from ``(line, sample)`` entries, ``sample()`` giving (text, labels) or None to pass
    over; a :class:`_Bad` sample raises a DataError naming ``path:line``, or is counted when skipping."""
    check_on_error(on_error)
    ex = Examples()
    for no, sample in entries:
        try:
            got = sample()
            if got is not None:
                ex.add(got[0], got[1], f"{path}:{no}")
        except _Bad as e:
            if on_error == "raise":
                raise DataError(e.message, path, no) from None
            ex.skipped += 1
            ex.skipped_reasons[e.reason] += 1
    return ex


def _split_labels(field_: str, sep: str) -> list[str]:
    labels = [x.strip() for x in field_.split(sep)]
    if not field_.strip():
        raise _Bad("no labels")
    if any(not x for x in labels):
        raise _Bad("empty label", f"empty label in {field_!r} (separator {sep!r})")
    return labels


def _text(text: str) -> str:
    if not text.strip():
        raise _Bad("empty text")
    return text


def read_label_text(path: str | Path, label_sep: str = "|", field_sep: str = " ",
                    on_error: str = "raise") -> Examples:
    """Read ``labels<field_sep>text`` lines (DuEE), splitting on the FIRST ``field_sep``.

    Parameters
    ----------
    path : str or Path
    label_sep : str
        Separator between labels, e.g. ``"人生-死亡|灾害/意外-坍/垮塌"``.
    field_sep : str
        Separator between the labels and the text.
    on_error : {"raise", "skip"}

    Returns
    -------
    Examples
    """
    def parse(line: str, no: int):
        labels, sep, text = line.partition(field_sep)
        if not sep:
            raise _Bad("no separator", f"no {field_sep!r} between labels and text")
        return _text(text), _split_labels(labels, label_sep)

    return _read_lines(path, parse, on_error)


def read_label_names(path: str | Path) -> list[str]:
    """One label name per line (GoEmotions ``labels.txt``); line ``i`` names id ``i - 1``."""
    path = Path(path)
    names = []
    for no, raw in enumerate(_split_lines(_read_bytes(path)), 1):
        try:
            names.append(_decode(raw).strip())
        except _Bad as e:
            raise DataError(e.message, path, no) from None
    if not names or any(not n for n in names):
        raise DataError("expected one non-empty label name per line", path,
                        names.index("") + 1 if "" in names else None)
    return names


def read_table(path: str | Path, text_col: int | str, labels_col: int | str,
               label_sep: str = ",", delimiter: str = "\t", header: bool = False,
               label_names: Sequence[str] | Mapping[str, str] | str | Path | None = None,
               n_cols: int | None = None, on_error: str = "raise") -> Examples:
    """Read a TSV/CSV file, one sample per line.

    Tab-separated files are split verbatim (no quoting: GoEmotions texts start with ``"``);
    other delimiters follow CSV quoting within a line (quoted fields may not span lines).

    Parameters
    ----------
    path : str or Path
    text_col, labels_col : int or str
        0-based column index, or a header name (needs ``header=True``).
    label_sep : str
        Separator between labels inside the labels column.
    delimiter : str
        Column separator, ``"\\t"`` or ``","`` usually.
    header : bool
        The first non-blank line names the columns.
    label_names : sequence, mapping, str or Path, optional
        Map raw label ids to names: a sequence is indexed by the integer id, a mapping is
        looked up by the raw string, a str or Path is a file with one name per line. A label
        with a class, ``id:class`` (``3:2``), maps its id and keeps the class (``anger:2``),
        unless a mapping has the whole string as a key.
    n_cols : int, optional
        Required column count; default: the header's, else the first data line's.
    on_error : {"raise", "skip"}

    Returns
    -------
    Examples
    """
    path = Path(path)
    if isinstance(label_names, (str, Path)):
        label_names = read_label_names(label_names)
    cols: dict[str, int] = {}
    state = {"n_cols": n_cols, "header": header}

    def parse(line: str, no: int):
        row = line.split(delimiter) if delimiter == "\t" else _csv_row(line, delimiter)
        if state["header"]:
            state["header"] = False
            cols.update({name.strip(): i for i, name in enumerate(row)})
            state["n_cols"] = state["n_cols"] or len(row)
            for c in (text_col, labels_col):
                if isinstance(c, str) and c not in cols:
                    raise DataError(f"no column {c!r} in the header; columns are "
                                    f"{', '.join(map(repr, cols))}", path, no)
            return None
        if state["n_cols"] is None:
            state["n_cols"] = len(row)
        if len(row) != state["n_cols"]:
            raise _Bad("wrong column count",
                       f"{len(row)} columns, expected {state['n_cols']} (delimiter {delimiter!r})")
        ti, li = (cols[c] if isinstance(c, str) else c for c in (text_col, labels_col))
        if max(ti, li) >= len(row):
            raise _Bad("wrong column count", f"{len(row)} columns, no column {max(ti, li)}")
        labels = _split_labels(row[li], label_sep)
        if label_names is not None:
            labels = [_map_label(x, label_names) for x in labels]
        return _text(row[ti]), labels

    if any(isinstance(c, str) for c in (text_col, labels_col)) and not header:
        raise DataError("columns given by name need header=True", path)
    return _read_lines(path, parse, on_error)


def _csv_row(line: str, delimiter: str) -> list[str]:
    try:
        return next(csv.reader([line], delimiter=delimiter, strict=True))
    except csv.Error as e:
        raise _Bad("malformed line", f"malformed CSV: {e}") from None


def _map_label(raw: str, names: Sequence[str] | Mapping[str, str]) -> str:
    label, sep, cls = raw.partition(CLASS_SEP)
    if sep and not (isinstance(names, Mapping) and raw in names):   # "3:2": id 3 in class 2, kept as written
        return _map_label(label, names) + sep + cls
    if isinstance(names, Mapping):
        if raw not in names:
            raise _Bad("unknown label id", f"label id {raw!r} is not in the label names")
        return names[raw]
    if not raw.isdigit() or int(raw) >= len(names):
        raise _Bad("unknown label id",
                   f"label id {raw!r} is not an index 0..{len(names) - 1} into the label names")
    return names[int(raw)]


def read_goemotions(path: str | Path, labels_txt: str | Path,
                    on_error: str = "raise") -> Examples:
    """Read a GoEmotions TSV (``text\\tids\\tcomment id``); ids become emotion names.

    Parameters
    ----------
    path : str or Path
    labels_txt : str or Path
        ``labels.txt``: the 28 emotion names, line ``i`` naming id ``i - 1``.
    on_error : {"raise", "skip"}

    Returns
    -------
    Examples
    """
    return read_table(path, 0, 1, label_sep=",", delimiter="\t", header=False,
                      label_names=read_label_names(labels_txt), n_cols=3, on_error=on_error)


def read_jsonl(path: str | Path, text_key: str = "text", labels_key: str = "labels",
               on_error: str = "raise") -> Examples:
    """Read JSON lines, each an object with a text and a list of labels (or one label).

    Parameters
    ----------
    path : str or Path
    text_key, labels_key : str
    on_error : {"raise", "skip"}

    Returns
    -------
    Examples
    """
    def parse(line: str, no: int):
        obj = _json_object(line)
        for key in (text_key, labels_key):
            if key not in obj:
                raise _Bad("missing key", f"no key {key!r}")
        text = obj[text_key]
        if not isinstance(text, str):
            raise _Bad("bad JSON", f"{text_key!r} must be a string")
        return _text(text), _json_labels(obj[labels_key], labels_key)

    return _read_lines(path, parse, on_error)


def read_label_studio(path: str | Path, text_key: str = "text", on_error: str = "raise") -> Examples:
    """Read a Label Studio JSON export (a list of tasks): each task's ``data[text_key]`` with the
    labels of its latest annotation that was not cancelled. A ``taxonomy`` result gives the last
    node of each selected path (the choice's alias, which ``hmtc suggest --label-config`` sets to
    the node id; else its value); a ``choices`` result gives each choice. Errors name the line on
    which the task starts; a task without an annotation is one (``on_error="skip"`` counts it
    under "unlabelled").

    Parameters
    ----------
    path : str or Path
    text_key : str
    on_error : {"raise", "skip"}

    Returns
    -------
    Examples
    """
    check_on_error(on_error)
    path = Path(path)
    raw = _read_bytes(path)
    try:
        doc = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 (byte {e.start})", path, raw.count(b"\n", 0, e.start) + 1) from None
    return _gather(path, ((no, functools.partial(_label_studio_task, task, text_key))
                          for no, task in _json_array_items(doc, path)), on_error)


def _json_array_items(doc: str, path: Path):
    """(line, item) of each element of the JSON array ``doc``, decoded one at a time so that a
    bad element is reported on its own line (lines counted as the reading goes, once)."""
    dec = json.JSONDecoder()
    i = len(doc) - len(doc.lstrip())
    line, seen = 1 + doc.count("\n", 0, i), i
    if not doc.startswith("[", i):
        raise DataError("a Label Studio export is a JSON list of tasks ([...])", path, line)
    i += 1
    while True:
        while i < len(doc) and doc[i] in " \t\r\n,":
            i += 1
        line, seen = line + doc.count("\n", seen, i), i
        if i >= len(doc):
            raise DataError("the task list never ends (no closing ])", path, line)
        if doc[i] == "]":
            return
        try:
            item, end = dec.raw_decode(doc, i)
        except json.JSONDecodeError as e:
            raise DataError(f"bad JSON: {e.msg}", path, e.lineno) from None
        except RecursionError:
            raise DataError("bad JSON: nested too deeply", path, line) from None
        yield line, item
        i = end


def _label_studio_task(task, text_key: str) -> tuple[str, list[str]]:
    if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
        raise _Bad("bad JSON", "a task must be an object with a data object")
    text = task["data"].get(text_key)
    if not isinstance(text, str):
        raise _Bad("missing key", f"the task's data has no string {text_key!r}")
    done = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
    if not done:
        raise _Bad("unlabelled", "the task has no annotation (export annotated tasks only, or on_error = skip)")
    labels: list[str] = []
    for res in done[-1].get("result") or []:
        value = res.get("value") if isinstance(res, dict) else None
        if not isinstance(value, dict):
            raise _Bad("bad JSON", "a result must be an object with a value object")
        if res.get("type") == "taxonomy":
            paths = value.get("taxonomy")
            if not isinstance(paths, list) or not all(isinstance(q, list) and q and all(isinstance(x, str) for x in q)
                                                      for q in paths):
                raise _Bad("bad JSON", "a taxonomy result's value.taxonomy must be a list of paths of strings")
            labels += [q[-1] for q in paths]
        elif res.get("type") == "choices":
            labels += _json_labels(value.get("choices"), "value.choices")
    return _text(text), _json_labels(labels, "annotation result")


HIAGM_ROOT = "Root"
_HIAGM_TEXT_KEYS = ("token", "doc_token")
_HIAGM_LABEL_KEYS = ("label", "doc_label")


def read_hiagm(path: str | Path, on_error: str = "raise") -> Examples:
    """Read the HiAGM / HGCLR layout of WOS, RCV1-V2 and NYT: one JSON object per line.

    The text is under ``token`` or ``doc_token``: a list of tokens (joined with single spaces)
    or a string. The labels are under ``label`` or ``doc_label``: label names, usually one per
    level (``["CS", "Machine learning"]``); they are node ids of the taxonomy read from the
    matching ``.taxonomy`` file (:func:`read_hiagm_taxonomy`), and, as with every reader, the
    label matrix is closed under ancestors, so listing the upper levels or not gives the same
    rows. Other keys (``doc_keyword``, ``doc_topic``) are ignored.

    Parameters
    ----------
    path : str or Path
    on_error : {"raise", "skip"}

    Returns
    -------
    Examples
    """
    def parse(line: str, no: int):
        obj = _json_object(line)
        text_key, labels_key = (_one_key(obj, keys) for keys in (_HIAGM_TEXT_KEYS, _HIAGM_LABEL_KEYS))
        tokens = obj[text_key]
        if isinstance(tokens, list) and all(isinstance(t, str) for t in tokens):
            tokens = " ".join(tokens)
        elif not isinstance(tokens, str):
            raise _Bad("bad JSON", f"{text_key!r} must be a string or a list of strings")
        return _text(tokens), _json_labels(obj[labels_key], labels_key)

    return _read_lines(path, parse, on_error)


def _json_object(line: str) -> dict:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise _Bad("bad JSON", f"bad JSON: {e.msg} at column {e.colno}") from None
    except RecursionError:                   # json recurses per level of nesting
        raise _Bad("bad JSON", "bad JSON: nested too deeply") from None
    if not isinstance(obj, dict):
        raise _Bad("bad JSON", f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _one_key(obj: dict, keys: tuple[str, ...]) -> str:
    """The one of ``keys`` that ``obj`` has; none or two is a bad sample."""
    present = [k for k in keys if k in obj]
    if len(present) != 1:
        raise _Bad("missing key" if not present else "bad JSON",
                   f"expected one of the keys {' or '.join(map(repr, keys))}, found "
                   + (" and ".join(map(repr, present)) if present else "neither"))
    return present[0]


def _json_labels(labels, key: str) -> list[str]:
    """A JSON list of label strings (or one string) as a stripped, non-empty list."""
    labels = [labels] if isinstance(labels, str) else labels
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise _Bad("bad JSON", f"{key!r} must be a string or a list of strings")
    if not labels:
        raise _Bad("no labels")
    if any(not x.strip() for x in labels):
        raise _Bad("empty label")
    return [x.strip() for x in labels]


def read_hiagm_taxonomy(path: str | Path, merge_repeated: bool = False) -> Taxonomy:
    """Read a HiAGM / HGCLR ``.taxonomy`` file into a validated :class:`Taxonomy`.

    Each line is ``parent<TAB>child<TAB>child...``; the root is ``Root`` and its line lists the
    top-level labels. Node ids are the names as written (trailing whitespace dropped, as
    HiAGM's own reader does), so the labels of :func:`read_hiagm` files are node ids as they
    stand; children keep the file's order.

    A leaf name listed under two or more parents (WOS lists Depression and Schizophrenia under
    both Medical and Psychology) is one distinct node per parent, id ``parent/name``, display
    name ``name``: the papers' gold sets hold such a leaf with one parent, and one node with two
    parents would add the other parent to every such sample once labels are closed under
    ancestors. :func:`hmtc.data.catalog.encode_labels` maps the leaf name of a gold set to the
    node under the parent the set lists. ``merge_repeated`` reads such a name as one node with
    two parents instead (a DAG, which the ``.tax`` format writes with ``&ID``): hmtc's reading
    before this rule.

    Parameters
    ----------
    path : str or Path
    merge_repeated : bool, default False

    Returns
    -------
    Taxonomy
        Rooted at ``Root``, with no file of its own (``save`` needs a ``.tax`` path, so the
        ``.taxonomy`` file is never overwritten by mistake).

    Raises
    ------
    TaxonomyError
        Naming the file and line: a line with no child, an empty name, a parent heading a
        second line, a child listed twice under one parent, ``Root`` as a child, a cycle, a
        parent listed under no node, an invalid id, or no ``Root`` line at all; without
        ``merge_repeated``, a repeated name that heads a line of its own (which copy would
        take its children?) or whose ``parent/name`` is a name of the file already.
    """
    path = Path(path)
    try:
        data = _read_bytes(path)
    except DataError as e:
        raise TaxonomyError(e.message, path) from None
    tax = Taxonomy.new(HIAGM_ROOT)
    g = tax.graph
    first_line: dict[str, int] = {}      # node -> the line that first names it
    heads: dict[str, int] = {}           # parent -> the line it heads
    edge_line: dict[tuple[str, str], int] = {}
    for no, raw in enumerate(_split_lines(data), 1):
        try:
            line = _decode(raw).rstrip()
        except _Bad as e:
            raise TaxonomyError(e.message, path, no) from None
        if not line:
            continue
        fields = [f.strip() for f in line.split("\t")]
        if "" in fields:
            raise TaxonomyError(f"empty name in field {fields.index('') + 1} (fields are "
                                "tab-separated: parent<TAB>child<TAB>child...)", path, no)
        if len(fields) < 2:
            raise TaxonomyError(f"{fields[0]!r} has no child; expected parent<TAB>child<TAB>child...",
                                path, no)
        parent, children = fields[0], fields[1:]
        if parent in heads:
            # HiAGM's reader keeps only the last such line; merging them would silently differ
            raise TaxonomyError(f"{parent!r} already heads line {heads[parent]}; list all its "
                                "children on one line", path, no, parent)
        heads[parent] = no
        first_line.setdefault(parent, no)
        g.add_node(parent)
        for child in children:
            first_line.setdefault(child, no)
            if child == HIAGM_ROOT:
                raise TaxonomyError(f"{HIAGM_ROOT!r} is the root and cannot be a child", path, no, child)
            if child == parent:
                raise TaxonomyError(f"self-loop: {child!r} is listed as its own child", path, no, child)
            if g.has_edge(parent, child):
                raise TaxonomyError(f"{child!r} is listed twice under {parent!r}", path, no, child)
            g.add_edge(parent, child, lead=[])
            edge_line[(parent, child)] = no
    if HIAGM_ROOT not in heads:
        raise TaxonomyError(f"no line for the root: expected {HIAGM_ROOT}<TAB>top-level label...", path)
    try:
        cycle = nx.find_cycle(g)
    except nx.NetworkXNoCycle:
        cycle = None
    if cycle:
        nodes = [e[0] for e in cycle] + [cycle[0][0]]
        raise TaxonomyError("cycle: " + " -> ".join(nodes), path, max(edge_line[e[:2]] for e in cycle),
                            cycle[0][0])
    for node in g:
        if node != HIAGM_ROOT and g.in_degree(node) == 0:
            raise TaxonomyError(f"{node!r} heads a line but is listed under no node; list it after "
                                f"{HIAGM_ROOT!r} or another parent", path, heads[node], node)
    if not merge_repeated:
        tax = Taxonomy(_repeated_apart(g, path, heads))
    try:
        tax.validate(path)
    except TaxonomyError as e:      # an invalid id: point at the line that names it
        raise TaxonomyError(e.message, path, first_line.get(e.item), e.item) from None
    return tax


def _repeated_apart(g: nx.DiGraph, path: Path, heads: dict[str, int]) -> nx.DiGraph:
    """``g`` with each name listed under several parents made one node per parent, id
    ``parent/name`` named ``name``, in the place the file lists it (see :func:`read_hiagm_taxonomy`)."""
    repeated = {n for n in g if g.in_degree(n) > 1}
    if not repeated:
        return g
    out = nx.DiGraph()
    out.graph.update(g.graph)
    out.add_nodes_from((n, attrs) for n, attrs in g.nodes(data=True) if n not in repeated)
    for parent in g:
        for child in g.successors(parent):
            node = f"{parent}/{child}" if child in repeated else child
            if child in heads and child in repeated:
                raise TaxonomyError(f"{child!r} is listed under {g.in_degree(child)} parents and heads a line "
                                    "of its own: which copy takes its children is unclear (hmtc taxonomy "
                                    "import --merge-repeated reads it as one node with several parents)",
                                    path, heads[child], child)
            if node != child and node in g:
                raise TaxonomyError(f"{child!r} under {parent!r} would become the node {node!r}, a name the "
                                    "file already has", path, item=node)
            if node != child:
                out.add_node(node, name=child)
            out.add_edge(parent, node, **g.edges[parent, child])
    return out


def strip_newsgroup_header(text: str) -> str:
    """Drop a post's headers (``From:``, ``Subject:`` ...) as scikit-learn does.

    The rule of ``sklearn.datasets._twenty_newsgroups.strip_newsgroup_header``: keep what follows
    the first blank line (the first ``"\\n\\n"``); a text without one becomes ``""``.
    """
    return text.partition("\n\n")[2]


def strip_newsgroup_footer(text: str) -> str:
    """Drop a post's signature block as scikit-learn does.

    The rule of ``sklearn.datasets._twenty_newsgroups.strip_newsgroup_footer``: split the
    stripped text into lines and find the last line that is blank or made only of hyphens
    (``line.strip().strip("-") == ""``); when it is not the first line, keep the lines before
    it; otherwise return ``text`` unchanged (not even stripped).
    """
    lines = text.strip().split("\n")
    cut = next((i for i in range(len(lines) - 1, -1, -1) if not lines[i].strip().strip("-")), 0)
    return "\n".join(lines[:cut]) if cut > 0 else text


# scikit-learn's _QUOTE_RE: searched in each line, so "^" is the line's start.
_QUOTE_RE = re.compile(r"(writes in|writes:|wrote:|says:|said:|^In article|^Quoted from|^\||^>)")


def strip_newsgroup_quoting(text: str) -> str:
    """Drop quoted lines and the lines that introduce a quote, as scikit-learn does.

    The rule of ``sklearn.datasets._twenty_newsgroups.strip_newsgroup_quoting``: drop every line
    (split at ``"\\n"``) that starts with ``>``, ``|``, ``In article`` or ``Quoted from``, or
    contains ``writes in``, ``writes:``, ``wrote:``, ``says:`` or ``said:`` anywhere.
    """
    return "\n".join(line for line in text.split("\n") if not _QUOTE_RE.search(line))


# fetch_20newsgroups(remove=...)'s names, in the order it applies them whatever the order given.
NEWSGROUP_REMOVALS = {"headers": strip_newsgroup_header, "footers": strip_newsgroup_footer,
                      "quotes": strip_newsgroup_quoting}


def check_removals(remove: Sequence[str], where: str | Path | None = None) -> tuple[str, ...]:
    """The removals named in ``remove``, once each, in the order they are applied.

    Parameters
    ----------
    remove : sequence of str
        Names from :data:`NEWSGROUP_REMOVALS`: ``"headers"``, ``"footers"``, ``"quotes"``.
    where : str or Path, optional
        The file the names come from (a dataset card), named in the error.

    Returns
    -------
    tuple of str
        In the order ``headers``, ``footers``, ``quotes`` (scikit-learn's), whatever the order given.

    Raises
    ------
    DataError
        When ``remove`` is not a list of names or names something else.
    """
    known = ", ".join(NEWSGROUP_REMOVALS)
    if (isinstance(remove, str) or not isinstance(remove, Sequence)
            or not all(isinstance(x, str) for x in remove)):
        raise DataError(f"'remove' must be a list of names from {known}, e.g. remove = [\"headers\"], "
                        f"not {remove!r}", where, item="remove")
    for name in remove:
        if name not in NEWSGROUP_REMOVALS:
            raise DataError(f"unknown removal {name!r} in 'remove'; one of {known}", where, item="remove")
    return tuple(name for name in NEWSGROUP_REMOVALS if name in remove)


def read_class_folders(path_or_tar: str | Path, split: str | None = None,
                       encoding: str = "utf-8", remove: Sequence[str] = (),
                       on_error: str = "raise") -> Examples:
    """Read a corpus with one folder per class, one file per sample (20 Newsgroups).

    A ``.tar``/``.tar.gz`` archive is read in place, never extracted. Files are read in
    sorted order of their path, so the order does not depend on the archive or the file
    system. Hidden files (``.DS_Store``) and files outside a class folder are ignored.

    Parameters
    ----------
    path_or_tar : str or Path
        A folder or a tar archive.
    split : str, optional
        Read the top-level folder named ``split`` or ending in ``-split`` (``"train"`` picks
        ``20news-bydate-train/``); class folders sit directly under it. Without a split the
        class folders are at the top level.
    encoding : str
    remove : sequence of str
        Strip newsgroup metadata from each text as scikit-learn's
        ``fetch_20newsgroups(remove=...)`` does: any of ``"headers"``, ``"footers"`` (signature
        blocks) and ``"quotes"`` (quoted replies), applied in that order (see
        :func:`strip_newsgroup_header`, :func:`strip_newsgroup_footer`,
        :func:`strip_newsgroup_quoting`). A text is the file with its final newline dropped, so
        it equals scikit-learn's for the same file up to that newline. A file that is empty is an
        error, but a text that only the removals empty is kept as ``""``, as scikit-learn keeps
        it, so every protocol reads the same samples.
    on_error : {"raise", "skip"}

    Returns
    -------
    Examples
        ``labels`` are ``[class folder name]``; ``sources`` are ``<path_or_tar>/<member>``.
    """
    check_on_error(on_error)
    path = Path(path_or_tar)
    steps = [NEWSGROUP_REMOVALS[name] for name in check_removals(remove, path)]
    if not path.exists():
        raise DataError("file or folder not found", path)
    files = _tar_files(path) if path.is_file() else _folder_files(path)
    prefix = ""
    if split is not None:
        tops = sorted({m.split("/", 1)[0] for m in files})
        match = [t for t in tops if t == split or t.endswith("-" + split)]
        if len(match) != 1:
            raise DataError(f"split {split!r} matches {len(match)} top-level folders "
                            f"({', '.join(match or tops)}); expected one", path)
        prefix = match[0] + "/"
    ex = Examples()
    for member in sorted(files):
        if not member.startswith(prefix):
            continue
        parts = member[len(prefix):].split("/")
        if len(parts) < 2 or any(p.startswith(".") for p in parts):
            continue
        where = f"{path}/{member}"
        no = 0
        try:
            lines = []
            for no, raw in enumerate(_split_lines(files[member]), 1):
                lines.append(_decode(raw, encoding))
            text = _text("\n".join(lines))
        except _Bad as e:
            if on_error == "raise":
                raise DataError(e.message, where, max(no, 1)) from None
            ex.skipped += 1
            ex.skipped_reasons[e.reason] += 1
            continue
        for step in steps:
            text = step(text)
        ex.add(text, [parts[0]], where)
    if not ex.texts and not ex.skipped:
        raise DataError("no class folders with files found"
                        + (f" under split {split!r}" if split else ""), path)
    return ex


def _tar_files(path: Path) -> dict[str, bytes]:
    # Read in archive order: seeking backwards in a gzip stream would decompress it again.
    try:
        with tarfile.open(path, "r:*") as tar:
            return {m.name.removeprefix("./"): tar.extractfile(m).read() for m in tar if m.isfile()}
    except tarfile.TarError as e:
        raise DataError(f"cannot read as a tar archive: {e}", path) from None


def _folder_files(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes()
            for p in path.rglob("*") if p.is_file()}
