"""Derive a taxonomy from a dataset: path-like labels split on a separator, or GoEmotions' maps."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..errors import DataError
from ..taxonomy import Taxonomy, TaxonomyIndex
from .catalog import dataset_folders, get_spec, load_dataset, resolve
from .readers import read_label_names

NEUTRAL = "neutral"


def taxonomy_from_labels(labels: Iterable[str], sep: str, maxsplit: int = -1) -> Taxonomy:
    """Build a taxonomy from path-like labels; see :meth:`Taxonomy.from_paths`."""
    return Taxonomy.from_paths(labels, sep=sep, maxsplit=maxsplit)


def dataset_label_sets(name_or_toml: str | Path, data_dir: str | Path | None = None,
                       on_error: str = "raise") -> list[list[str]]:
    """Each sample's labels in every split of the dataset, the splits a taxonomy is derived from:
    a label that only dev or test holds is a node too, where the train split alone would leave it
    out and stop the run's evaluation at it."""
    ds = load_dataset(name_or_toml, data_dir, on_error=on_error)
    return [list(labs) for ex in ds.splits.values() for labs in ex.labels]


def off_path_samples(index: TaxonomyIndex, label_sets: Sequence[Sequence[str]]) -> np.ndarray:
    """(S,) True where a sample, its labels closed under ancestors, has two or more labels
    among the children of one node (the root included): its labels are not one path from the
    root, so it breaks an ``!exclusive`` mark on that node. Data with none is single-path."""
    y = index.indicator(label_sets).astype(np.float32)
    child = np.repeat(np.arange(index.n_nodes), index.n_parents)
    into = sp.csr_array((np.ones(len(child), np.float32), (child, index.parent_idx)),
                        shape=(index.n_nodes, index.n_nodes))     # [c, p] = 1: p is a parent of c
    per_parent = (into.T @ y.T).T                                   # (S, N) positive children of each node
    top = y[:, index.n_parents == 0].sum(1)                         # positive children of the root
    return (top > 1) | (per_parent > 1).any(1)


def taxonomy_from_dataset(name_or_toml: str | Path, data_dir: str | Path | None = None,
                          on_error: str = "raise",
                          label_sets: Sequence[Sequence[str]] | None = None) -> Taxonomy:
    """Derive the taxonomy of a dataset by its spec's ``taxonomy_from`` rule.

    ``duee``: the labels of every split split on the first ``-`` (9 categories / 65 subtypes);
    ``20newsgroups``: group names split on ``.`` (ragged depth 2..5);
    ``goemotions``: sentiment -> Ekman group -> emotion from the mapping files
    (see :func:`goemotions_taxonomy`); a TOML dataset with ``[taxonomy_from] sep = ...``:
    the labels of every split (:func:`dataset_label_sets`) split on ``sep``.

    Parameters
    ----------
    name_or_toml : str or Path
    data_dir : str or Path, optional
    on_error : {"raise", "skip"}
        For bad lines in the splits read for their labels.
    label_sets : sequence of sequences of str, optional
        Those labels, when already read (:func:`dataset_label_sets`).

    Returns
    -------
    Taxonomy
    """
    spec = get_spec(name_or_toml)
    rule = spec.taxonomy_from
    if not rule:
        raise DataError(f"dataset {spec.name!r} says nothing on how to derive its taxonomy; add "
                        '[taxonomy_from] sep = "..." to its TOML or write the .tax by hand',
                        spec.toml)
    if rule["kind"] == "goemotions":
        folders = dataset_folders(spec, data_dir)
        return goemotions_taxonomy(*(resolve(rule[k], folders)
                                     for k in ("labels_txt", "ekman", "sentiment")))
    if label_sets is None:
        label_sets = dataset_label_sets(name_or_toml, data_dir, on_error)
    labels = [lab for labs in label_sets for lab in labs]
    return taxonomy_from_labels(labels, rule["sep"], rule.get("maxsplit", -1))


def _read_groups(path: Path) -> dict[str, list[str]]:
    try:
        obj = json.loads(Path(path).read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise DataError("file not found", path) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read JSON: {e}", path) from None
    if not isinstance(obj, dict) or not all(
            isinstance(v, list) and all(isinstance(x, str) for x in v) for v in obj.values()):
        raise DataError("expected an object mapping each group to a list of emotion names", path)
    return obj


def _group_of(groups: dict[str, list[str]], path: Path, names: list[str]) -> dict[str, str]:
    """emotion -> its one group; every emotion but neutral needs exactly one."""
    of: dict[str, str] = {}
    for group, members in groups.items():
        for e in members:
            if e not in names:
                raise DataError(f"group {group!r} lists {e!r}, which is not in labels.txt", path,
                                item=e)
            if e in of:
                raise DataError(f"{e!r} is in two groups: {of[e]!r} and {group!r}", path, item=e)
            of[e] = group
    missing = [e for e in names if e != NEUTRAL and e not in of]
    if missing:
        raise DataError(f"no group for {', '.join(map(repr, missing))}", path)
    return of


def goemotions_taxonomy(labels_txt: str | Path, ekman_json: str | Path,
                        sentiment_json: str | Path) -> Taxonomy:
    """GoEmotions as a 3-level tree: sentiment -> Ekman group -> emotion.

    Ids are ``sentiment:<s>`` (level 1), ``ekman:<g>`` (level 2), and the emotion names of
    ``labels.txt`` (level 3, so the raw labels map directly); display names drop the prefix.
    ``neutral`` is its own branch ``sentiment:neutral -> ekman:neutral -> neutral``, so every
    level has a neutral class, as in the published sentiment+neutral / Ekman / 28-way results.

    Parameters
    ----------
    labels_txt : str or Path
        The emotion names, one per line; must include ``neutral``.
    ekman_json : str or Path
        ``ekman_mapping.json``: Ekman group -> emotions.
    sentiment_json : str or Path
        ``sentiment_dict.json``: sentiment -> emotions.

    Returns
    -------
    Taxonomy

    Raises
    ------
    DataError
        If an emotion is missing from or doubled in a map, or an Ekman group's emotions
        span more than one sentiment (the groups would not nest under the sentiments).
    """
    names = read_label_names(labels_txt)
    if NEUTRAL not in names:
        raise DataError(f"{NEUTRAL!r} is not in labels.txt", labels_txt)
    ekman = _read_groups(Path(ekman_json))
    sentiment_of = _group_of(_read_groups(Path(sentiment_json)), Path(sentiment_json), names)
    _group_of(ekman, Path(ekman_json), names)
    edges = [(None, f"sentiment:{NEUTRAL}", NEUTRAL),
             (f"sentiment:{NEUTRAL}", f"ekman:{NEUTRAL}", NEUTRAL),
             (f"ekman:{NEUTRAL}", NEUTRAL, None)]
    for group, members in ekman.items():
        sentiments = sorted({sentiment_of[e] for e in members})
        if len(sentiments) != 1:
            detail = "; ".join(f"{s}: {', '.join(e for e in members if sentiment_of[e] == s)}"
                               for s in sentiments)
            raise DataError(f"Ekman group {group!r} spans {len(sentiments)} sentiments "
                            f"({detail}); each group must fall under exactly one", ekman_json,
                            item=group)
        edges.append((None, f"sentiment:{sentiments[0]}", sentiments[0]))
        edges.append((f"sentiment:{sentiments[0]}", f"ekman:{group}", group))
        edges.extend((f"ekman:{group}", e, None) for e in members)
    return Taxonomy.from_edges(edges)
