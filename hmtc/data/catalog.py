"""Datasets by name: the built-in specs, user TOML specs, loading, label encoding, dev carving.

Data files are never part of the repository: a built-in dataset lives in
``<data_dir>/<name>/`` where the data folder comes from ``--data-dir`` or ``HMTC_DATA``.
Taxonomies of the built-ins ship inside the package as ``hmtc/taxonomies/<name>.tax`` (package data,
so an installed wheel has them; ``taxonomies/`` at the repository root links there); a TOML dataset
may name a HiAGM ``.taxonomy`` file instead, converted to ``.tax`` when the dataset is loaded.
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import scipy.sparse as sp

import hmtc

from ..config import tomllib
from ..errors import DataError
from ..home import home
from ..label_classes import CLASS_SEP, label_classes, with_absent_classes
from ..registry import Registry
from ..taxonomy import EXCLUSIVE, Taxonomy, TaxonomyIndex
from .readers import (Examples, _Bad, check_on_error, check_removals, read_class_folders, read_goemotions,
                      read_hiagm, read_hiagm_taxonomy, read_jsonl, read_label_studio, read_label_text, read_table)

TAXONOMIES = Path(hmtc.__file__).resolve().parent / "taxonomies"
READERS = {"label_text": read_label_text, "table": read_table, "jsonl": read_jsonl,
           "class_folders": read_class_folders, "goemotions": read_goemotions, "hiagm": read_hiagm,
           "label-studio": read_label_studio}
# Reader options that name files: resolved like split paths.
PATH_OPTIONS = ("labels_txt", "label_names")
_TOML_KEYS = {"name", "format", "splits", "taxonomy", "taxonomy_from", "description"}


@dataclass(frozen=True)
class SplitSpec:
    """One split: a file (or folder/archive) and reader options for it alone."""

    path: str
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetSpec:
    """How to read a dataset and where its taxonomy comes from.

    Attributes
    ----------
    name : str
    format : str
        A key of :data:`READERS`.
    options : dict
        Reader keyword arguments shared by all splits.
    splits : dict of str to SplitSpec
        Paths relative to the dataset folder.
    taxonomy : Path
        The ``.tax`` file (it may not exist yet: ``hmtc taxonomy from-labels`` writes it), or a
        HiAGM ``.taxonomy`` file (see :func:`taxonomy_file`); for a TOML dataset relative to its
        folders (see :func:`dataset_folders`).
    taxonomy_from : dict
        How :func:`hmtc.data.builders.taxonomy_from_dataset` derives it:
        ``{"kind": "paths", "sep": ..., "maxsplit": ...}`` or ``{"kind": "goemotions", ...}``;
        empty when it cannot be derived.
    description : str
    toml : Path, optional
        The TOML file of a user dataset; its folder is searched first for relative paths.
    """

    name: str
    format: str
    options: dict
    splits: dict[str, SplitSpec]
    taxonomy: Path
    taxonomy_from: dict
    description: str = ""
    toml: Path | None = None

    @property
    def protocol(self) -> str:
        """How the texts are cleaned, for a run's record: ``"raw"`` (as in the files) or the
        removals of the ``remove`` reader option, ``"remove=headers,footers,quotes"``.

        Splits read differently are listed one by one: ``"train: remove=headers; test: raw"``.
        """
        per_split = {}
        for name, split in self.splits.items():
            removals = check_removals({**self.options, **split.options}.get("remove", ()))
            per_split[name] = "remove=" + ",".join(removals) if removals else "raw"
        if len(set(per_split.values())) == 1:
            return next(iter(per_split.values()))
        return "; ".join(f"{name}: {protocol}" for name, protocol in per_split.items())


# the built-in datasets by name; a name that is none of them may be a dataset .toml file
DATASETS: Registry = Registry("dataset", DataError, hint="; or give a dataset .toml file")
for _spec in [
    DatasetSpec("duee", "label_text", {"label_sep": "|", "field_sep": " "},
                {"train": SplitSpec("multi-classification-train.txt"),
                 "test": SplitSpec("multi-classification-test.txt")},
                TAXONOMIES / "duee.tax",
                {"kind": "paths", "sep": "-", "maxsplit": 1},
                "DuEE 1.0 event types (Chinese), 9 categories / 65 subtypes, multi-label"),
    DatasetSpec("goemotions", "goemotions", {"labels_txt": "labels.txt"},
                {s: SplitSpec(f"{s}.tsv") for s in ("train", "dev", "test")},
                TAXONOMIES / "goemotions.tax",
                {"kind": "goemotions", "labels_txt": "labels.txt",
                 "ekman": "ekman_mapping.json", "sentiment": "sentiment_dict.json"},
                "GoEmotions Reddit comments (English), sentiment / Ekman / 28 emotions, multi-label"),
    DatasetSpec("20newsgroups", "class_folders", {"encoding": "utf-8"},
                {s: SplitSpec("20news-bydate.tar.gz", {"split": s}) for s in ("train", "test")},
                TAXONOMIES / "20newsgroups.tax",
                {"kind": "paths", "sep": "."},
                "20 Newsgroups bydate (English), hierarchy from group names, single-label"),
]:
    DATASETS.register(_spec.name)(_spec)


@dataclass
class Dataset:
    """A loaded dataset.

    Attributes
    ----------
    name : str
    splits : dict of str to Examples
    taxonomy_path : Path
        The ``.tax`` file to load: the spec's, or the conversion of its ``.taxonomy`` file.
    spec : DatasetSpec
    """

    name: str
    splits: dict[str, Examples]
    taxonomy_path: Path
    spec: DatasetSpec

    @property
    def protocol(self) -> str:
        """How the texts were cleaned: :attr:`DatasetSpec.protocol` of the spec they were read with."""
        return self.spec.protocol


def data_dir(explicit: str | Path | None = None) -> Path:
    """The data folder: ``explicit`` (``--data-dir``), else ``$HMTC_DATA``.

    Raises
    ------
    DataError
        When neither is set or the folder does not exist.
    """
    raw, origin = (explicit, "--data-dir") if explicit is not None else \
        (os.environ.get("HMTC_DATA"), "HMTC_DATA")
    if not raw:
        raise DataError("no data folder: set HMTC_DATA to the folder holding the datasets (e.g. "
                        "`export HMTC_DATA=../shared/datasets`), or data.data_dir in the run config "
                        "(--data-dir on the commands that have it)")
    path = Path(raw).expanduser()
    if not path.is_dir():
        raise DataError(f"data folder (from {origin}) does not exist or is not a folder", path)
    return path


def get_spec(name_or_toml: str | Path) -> DatasetSpec:
    """The spec of a built-in dataset name or of a user ``.toml`` file."""
    path = Path(name_or_toml)
    if str(name_or_toml) not in DATASETS and (path.suffix == ".toml" or path.is_file()):
        return _spec_from_toml(path)
    return DATASETS.get(str(name_or_toml))


def _spec_from_toml(path: Path) -> DatasetSpec:
    try:
        table = tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise DataError("dataset file not found", path) from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise DataError(f"cannot read TOML: {e}", path) from None
    for key in ("name", "format", "splits"):
        if key not in table:
            raise DataError(f"missing key {key!r}", path, item=key)
    fmt = table["format"]
    if fmt not in READERS:
        raise DataError(f"unknown format {fmt!r}; one of {', '.join(READERS)}", path, item="format")
    options = {k: v for k, v in table.items() if k not in _TOML_KEYS}
    splits = {}
    if not isinstance(table["splits"], dict) or not table["splits"]:
        raise DataError("[splits] must map split names to paths", path, item="splits")
    for split, value in table["splits"].items():
        if isinstance(value, str):
            splits[split] = SplitSpec(value)
        elif isinstance(value, dict) and isinstance(value.get("path"), str):
            extra = {k: v for k, v in value.items() if k != "path"}
            splits[split] = SplitSpec(value["path"], extra)
        else:
            raise DataError(f"split {split!r} must be a path or a table with a 'path'", path,
                            item=split)
        _check_options(READERS[fmt], {**options, **splits[split].options}, path)
    tax = Path(table.get("taxonomy", f"{table['name']}.tax"))
    rule = table.get("taxonomy_from", {})
    if rule and not isinstance(rule.get("sep"), str):
        raise DataError("[taxonomy_from] needs sep = \"...\" (and optionally maxsplit)", path,
                        item="taxonomy_from")
    return DatasetSpec(str(table["name"]), fmt, options, splits,
                       tax,
                       {"kind": "paths", "maxsplit": -1, **rule} if rule else {},
                       str(table.get("description", "")), path)


def _check_options(reader, options: dict, path: Path | None) -> None:
    allowed = set(inspect.signature(reader).parameters) - {"path", "path_or_tar", "on_error"}
    for key in options:
        if key not in allowed:
            raise DataError(f"unknown option {key!r} for this format; allowed: "
                            f"{', '.join(sorted(allowed))}", path, item=key)
    if "remove" in options:         # checked here so that a bad name is reported with its card
        check_removals(options["remove"], path)


def with_options(spec: DatasetSpec, options: dict) -> DatasetSpec:
    """``spec`` with the reader options ``options`` set over its own and over each split's.

    This is how a run changes how a dataset is read without a card of its own, e.g.
    ``{"remove": ["headers", "footers", "quotes"]}`` for ``20newsgroups``; the returned spec
    records them, so its :attr:`~DatasetSpec.protocol` states the cleaning.

    Raises
    ------
    DataError
        When an option is not one of the format's reader options, or a bad ``remove``.
    """
    try:
        _check_options(READERS[spec.format], options, None)
    except DataError as e:
        raise DataError(f"options for dataset {spec.name!r}: {e.message}", item=e.item) from None
    splits = {name: SplitSpec(split.path, {k: v for k, v in split.options.items() if k not in options})
              for name, split in spec.splits.items()}
    return replace(spec, options={**spec.options, **options}, splits=splits)


def dataset_protocol(name_or_toml: str | Path, options: dict | None = None) -> str:
    """The :attr:`~DatasetSpec.protocol` of a dataset read with ``options``, without reading it."""
    return with_options(get_spec(name_or_toml), options or {}).protocol


def dataset_folders(spec: DatasetSpec, data_dir_: str | Path | None = None) -> list[Path]:
    """Folders searched, in order, for the relative paths of ``spec``.

    A built-in's folder is ``<data dir>/<name>``; a TOML dataset searches its own folder,
    then the data folder when one is given or set.
    """
    if spec.toml is None:
        folder = data_dir(data_dir_) / spec.name
        if not folder.is_dir():
            raise DataError(f"no folder for dataset {spec.name!r} in the data folder; expected "
                            f"{spec.name}/ with {', '.join(s.path for s in spec.splits.values())}",
                            folder)
        return [folder]
    folders = [spec.toml.parent]
    env = os.environ.get("HMTC_DATA")
    if data_dir_ is not None:
        folders.append(data_dir(data_dir_))
    elif env and Path(env).expanduser().is_dir():   # a stale $HMTC_DATA must not break a self-contained TOML
        folders.append(Path(env).expanduser())
    return folders


def resolve(rel: str | Path, folders: list[Path]) -> Path:
    """``rel`` in the first folder that has it (the first folder when none has it)."""
    rel = Path(rel).expanduser()
    if rel.is_absolute():
        return rel
    for folder in folders:
        if (folder / rel).exists():
            return folder / rel
    return folders[0] / rel


def load_dataset(name_or_toml: str | Path, data_dir: str | Path | None = None,
                 splits: list[str] | None = None, on_error: str = "raise",
                 options: dict | None = None) -> Dataset:
    """Read the splits of a built-in or TOML dataset.

    Parameters
    ----------
    name_or_toml : str or Path
        ``duee``, ``goemotions``, ``20newsgroups`` or a dataset ``.toml`` file.
    data_dir : str or Path, optional
        The data folder (default: ``$HMTC_DATA``).
    splits : list of str, optional
        Which splits to read (default: all).
    on_error : {"raise", "skip"}
    options : dict, optional
        Reader options set over the dataset's own (see :func:`with_options`).

    Returns
    -------
    Dataset
        Its ``spec`` holds the options the splits were read with.
    """
    spec = get_spec(name_or_toml)
    if options:
        spec = with_options(spec, options)
    wanted = list(spec.splits) if splits is None else list(splits)
    for s in wanted:
        if s not in spec.splits:
            raise DataError(f"dataset {spec.name!r} has no split {s!r}; splits: "
                            f"{', '.join(spec.splits)}")
    folders = dataset_folders(spec, data_dir)
    reader = READERS[spec.format]
    out = {}
    for s in wanted:
        opts = {**spec.options, **spec.splits[s].options}
        for key in PATH_OPTIONS:
            if isinstance(opts.get(key), str):
                opts[key] = resolve(opts[key], folders)
        out[s] = reader(resolve(spec.splits[s].path, folders), on_error=on_error, **opts)
    return Dataset(spec.name, out, taxonomy_file(resolve(spec.taxonomy, folders)), spec)


# the rule of read_hiagm_taxonomy, hashed into the name of a conversion: repeated leaf names as
# distinct nodes (conversions from before it merged them, and stay in the cache under other names)
_HIAGM_RULE = b"repeated names distinct\n"


def taxonomy_file(path: Path) -> Path:
    """The ``.tax`` file for a dataset's taxonomy file ``path``.

    A ``.tax`` file (or a missing file, so that loading it says "file not found") is ``path``
    itself. A HiAGM ``.taxonomy`` file is converted by
    :func:`~hmtc.data.readers.read_hiagm_taxonomy` and saved once under
    ``$HMTC_HOME/taxonomies/`` (``HMTC_HOME`` defaults to ``~/.cache/hmtc``, as for encoders),
    named by a hash of its bytes and of the conversion's rule: every consumer reads a ``.tax``
    file, the dataset folder may be read-only, and an edited ``.taxonomy`` (or a conversion
    made under the earlier rule, which merged repeated names) gets a new conversion.

    Raises
    ------
    TaxonomyError
        When the ``.taxonomy`` file is malformed, naming its file and line.
    """
    if path.suffix != ".taxonomy" or not path.is_file():
        return path
    digest = hashlib.sha256(_HIAGM_RULE + path.read_bytes()).hexdigest()[:16]
    out = home() / "taxonomies" / f"{path.stem}-{digest}.tax"
    if not out.is_file():
        read_hiagm_taxonomy(path).save(out)
    return out


def _where(source: str) -> tuple[str, int | None]:
    path, _, line = source.rpartition(":")
    return (path, int(line)) if line.isdigit() and path else (source, None)


def encode_labels(examples: Examples, taxonomy: Taxonomy | TaxonomyIndex,
                  on_error: str = "raise") -> np.ndarray:
    """Indicator matrix (samples x taxonomy nodes), closed under ancestors.

    A raw label must equal a node id, or name a leaf that :func:`~hmtc.data.readers.read_hiagm_taxonomy`
    imports once per parent as ``parent/name`` (WOS's Depression under Medical and Psychology)
    with the one such parent the sample lists too (``["Medical", "Depression"]`` is
    ``Medical/Depression``): the gold set as the papers score it. An unknown label raises :class:`DataError` naming
    the sample's ``file:line`` and the closest ids; with ``on_error="skip"`` it is dropped
    and counted in ``examples.skipped_reasons["unknown label"]`` (a sample left without
    labels gets an all-zero row, or only the first classes below, so rows stay aligned with
    ``examples``).

    Labels with classes (``docs/label-classes.md``; :func:`hmtc.label_classes.label_classes`) are
    written ``label:class`` (``joy:weak``, the id of the class node). The label alone
    (``"label without a class"``), a class the taxonomy does not list (``"unknown class"``)
    and two classes of one label in one sample (``"two classes of one label"``) are errors
    naming the sample's ``file:line``, or with ``on_error="skip"`` dropped and counted under
    those reasons. A label with classes that a sample does not mention is in its first class
    (:func:`hmtc.label_classes.with_absent_classes`): ``none``, intensity 0.

    A sample whose labels, closed under ancestors, hold two children of one ``!exclusive`` group
    is an error naming its ``file:line`` in any split (:func:`_check_groups`), or with
    ``on_error="skip"`` left without labels and counted under ``"two children of an exclusive
    group"``.

    Parameters
    ----------
    examples : Examples
    taxonomy : Taxonomy or TaxonomyIndex
    on_error : {"raise", "skip"}

    Returns
    -------
    ndarray of bool, shape (len(examples), n_nodes)
    """
    check_on_error(on_error)
    index = taxonomy.compile() if isinstance(taxonomy, Taxonomy) else taxonomy
    known = index.id_to_index
    lc = label_classes(index)
    classes = dict(zip(lc.labels, lc.classes))
    label_of = {f"{lab}{CLASS_SEP}{c}": lab for lab, names in classes.items() for c in names}
    kept = []
    for labels, source in zip(examples.labels, examples.sources):
        row, seen = [], {}                   # seen: label with classes -> its class in this sample
        for lab in labels:
            lab = _under_listed_parent(lab, labels, known)
            try:
                if lab not in known:
                    raise _unknown(lab, index, classes)
                if lab in classes:
                    raise _Bad("label without a class", f"label {lab!r} takes a class: write "
                               f"{lab}{CLASS_SEP}<class>, one of {', '.join(classes[lab])}")
                if lab in label_of:
                    first = seen.setdefault(label_of[lab], lab)
                    if first != lab:
                        raise _Bad("two classes of one label", f"two classes of label {label_of[lab]!r} "
                                   f"({first!r}, {lab!r}); a label takes one class")
            except _Bad as e:
                if on_error == "raise":
                    raise DataError(e.message, *_where(source)) from None
                examples.skipped_reasons[e.reason] += 1
                continue
            row.append(lab)
        kept.append(row)
    y = index.indicator(kept)
    _check_groups(y, examples, index, on_error)
    return with_absent_classes(y, index, lc)


def _check_groups(y: np.ndarray, examples: Examples, index: TaxonomyIndex, on_error: str) -> None:
    """Refuse a sample with two positive children of one exclusive group (``y`` closed under
    ancestors). Training data that breaks a mark contradicts the group loss the mark adds, and
    gold data that breaks it can never be decoded right (decoding keeps one child per group), so
    it is a data error in any split; ``on_error="skip"`` clears such a sample's row instead."""
    if not index.n_groups:
        return
    kids = index.exclusive_children
    group, slot = np.nonzero(kids >= 0)
    member = sp.csr_array((np.ones(len(group), np.int32), (kids[group, slot], group)),
                          shape=(index.n_nodes, index.n_groups))
    rows, groups = (sp.csr_array(y, dtype=np.int32) @ member > 1).nonzero()     # row-major: first sample first
    if not len(rows):
        return
    if on_error == "raise":
        g = groups[0]
        both = [index.ids[c] for c in kids[g] if c >= 0 and y[rows[0], c]][:2]
        head = f"{index.ids[index.exclusive_parent[g]]!r}" if index.exclusive_parent[g] >= 0 else "the root"
        raise DataError(f"labels {both[0]!r} and {both[1]!r} (or their descendants) are two children of {head}, "
                        f"which the taxonomy marks {EXCLUSIVE}: a text takes at most one of them. Gold labels "
                        "that break the mark are a data error in any split: fix them, or drop the mark",
                        *_where(examples.sources[rows[0]]))
    bad = np.unique(rows)
    y[bad] = False
    examples.skipped_reasons["two children of an exclusive group"] += len(bad)


def _under_listed_parent(lab: str, labels: list[str], known: dict[str, int]) -> str:
    """``lab``, or the node ``parent/lab`` for the one ``parent`` among ``labels`` that has it (a
    leaf name a HiAGM taxonomy repeats under several parents, imported as one node per parent)."""
    if lab in known:
        return lab
    hits = [f"{parent}/{lab}" for parent in labels if f"{parent}/{lab}" in known]
    return hits[0] if len(hits) == 1 else lab


def _unknown(lab: str, index: TaxonomyIndex, classes: dict[str, tuple[str, ...]]) -> _Bad:
    """Why ``lab`` is not a node: a class its label does not list, else an unknown label."""
    for i, ch in enumerate(lab):             # every split point: a label id may hold CLASS_SEP itself
        if ch == CLASS_SEP and lab[:i] in classes:
            return _Bad("unknown class", f"unknown class {lab[i + 1:]!r} of label {lab[:i]!r}; its "
                        f"classes: {', '.join(classes[lab[:i]])}")
    close = difflib.get_close_matches(lab, index.ids, n=3)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    return _Bad("unknown label", f"label {lab!r} is not a taxonomy node{hint}")


def dev_split(examples: Examples, fraction: float = 0.1,
              seed: int = 0) -> tuple[Examples, Examples]:
    """Carve a dev set out of ``examples`` (for datasets without one), reproducibly.

    Parameters
    ----------
    examples : Examples
    fraction : float
        Share of samples for dev, in (0, 1); at least one sample goes to each side.
    seed : int

    Returns
    -------
    (train, dev) : tuple of Examples
        Both keep the original sample order.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), not {fraction}")
    n = len(examples)
    if n < 2:
        raise DataError(f"cannot carve a dev set from {n} sample(s)")
    n_dev = min(max(1, round(n * fraction)), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    dev = np.sort(perm[:n_dev])
    train = np.sort(perm[n_dev:])
    return examples.subset(train.tolist()), examples.subset(dev.tolist())
