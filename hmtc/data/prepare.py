"""A run's prepared data: its taxonomy, splits, label matrices and token ids, the decoding facts
the training labels imply, and where a run's checkpoint lies."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..batching import tokenize
from ..decode import stops_early
from ..errors import DataError, HmtcError
from ..taxonomy import Taxonomy, TaxonomyIndex
from .catalog import dev_split, encode_labels, load_dataset, taxonomy_file


@dataclass
class Prepared:
    """Everything a run needs from data, taxonomy and tokenizer."""

    taxonomy: Taxonomy
    index: TaxonomyIndex
    tokenizer: object
    texts: dict[str, list[str]]
    token_ids: dict[str, list[list[int]]]
    labels: dict[str, np.ndarray]
    single_path: bool
    at_least_one: bool
    dataset: str
    complete: bool = False
    notes: tuple[str, ...] = ()      # what a user should know about the data, said once by the trainer
    protocol: str = "raw"            # how the texts were cleaned (hmtc.data.catalog.DatasetSpec.protocol)


def taxonomy_for(cfg: dict) -> Taxonomy:
    """The configured taxonomy file (``.tax`` or HiAGM ``.taxonomy``), else the dataset's own."""
    d = cfg["data"]
    path = d["taxonomy"] or load_dataset(d["dataset"], data_dir=d["data_dir"] or None, splits=[]).taxonomy_path
    return Taxonomy.load(taxonomy_file(Path(path)))      # a HiAGM .taxonomy file is converted once


def prepare(cfg: dict, taxonomy: Taxonomy, tokenizer=None, splits_wanted: list[str] | None = None) -> Prepared:
    """Load the dataset, carve dev from train if needed, encode labels, tokenise (with a tokenizer).

    ``single_path``, ``at_least_one`` and ``complete`` (``[decode]``) set to ``"auto"`` are read
    from the training labels: one leaf per sample; a label on every sample; every label set
    reaching a leaf.
    """
    dcfg = cfg["data"]
    if dcfg["data_dir"] and not Path(dcfg["data_dir"]).expanduser().is_dir():
        raise DataError("data.data_dir does not exist or is not a folder", dcfg["data_dir"])
    ds = load_dataset(dcfg["dataset"], data_dir=dcfg["data_dir"] or None, options=dcfg.get("options") or None)
    index = taxonomy.compile()
    splits = dict(ds.splits)
    if "train" not in splits:
        raise HmtcError(f"dataset {dcfg['dataset']!r} has no train split")
    if dcfg["train_limit"]:
        splits["train"] = splits["train"].subset(range(min(dcfg["train_limit"], len(splits["train"]))))
    if "dev" not in splits:
        if not dcfg["dev_fraction"]:
            raise DataError(f"dataset {dcfg['dataset']!r}: the dev split is empty (data.dev_fraction = 0 and the "
                            "dataset has no dev split)")
        splits["train"], splits["dev"] = dev_split(splits["train"], dcfg["dev_fraction"], cfg["train"]["seed"])
    if splits_wanted is not None:
        splits = {k: v for k, v in splits.items() if k in splits_wanted}
    for name, ex in splits.items():            # refused before any training, not after it
        if not len(ex):
            why = " (data.dev_fraction = 0 and the dataset has no dev split)" if name == "dev" else ""
            raise DataError(f"dataset {dcfg['dataset']!r}: the {name} split is empty{why}")
    labels = {name: encode_labels(ex, taxonomy) for name, ex in splits.items()}
    texts = {name: list(ex.texts) for name, ex in splits.items()}
    token_ids = ({name: tokenize(tokenizer, t, dcfg["max_length"]) for name, t in texts.items()}
                 if tokenizer is not None else {})
    train_y = labels.get("train", next(iter(labels.values())))
    leaves_per_sample = (train_y & index.leaf_mask).sum(1)
    single = cfg["decode"]["single_path"]
    single_path = bool((leaves_per_sample <= 1).all()) if single == "auto" else bool(single)
    one = cfg["decode"].get("at_least_one", "auto")
    at_least_one = bool(train_y.any(1).all()) if one == "auto" else bool(one)
    comp = cfg["decode"].get("complete", False)     # absent in configs saved before it existed: off
    complete = not stops_early(train_y, index).any() if comp == "auto" else bool(comp)
    notes = []
    internal_only = int((train_y.any(1) & ~(train_y & index.leaf_mask).any(1)).sum())
    if internal_only:
        notes.append(f"{internal_only} of {len(train_y)} training samples carry only internal nodes (no leaf); "
                     "leaf-level metrics count none for them")
    return Prepared(taxonomy, index, tokenizer, texts, token_ids, labels, single_path, at_least_one,
                    str(dcfg["dataset"]), complete, tuple(notes), ds.protocol)


def locate(target: str | Path) -> tuple[Path, Path]:
    """(run folder, checkpoint folder) for a run folder (uses ``best/``) or a checkpoint."""
    target = Path(target)
    if (target / "best" / "checkpoint.json").is_file():
        return target, target / "best"
    if (target / "checkpoint.json").is_file():
        return target.parent, target
    raise HmtcError("neither a run folder (with best/) nor a checkpoint folder", target)
