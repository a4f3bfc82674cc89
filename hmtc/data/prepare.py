"""A run's prepared data: its taxonomy, splits, label matrices and token ids, the decoding facts
the training labels imply, and where a run's checkpoint lies."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..batching import tokenize
from ..config import DataConfig, RunConfig
from ..decode import Decoding
from ..errors import ConfigError, DataError, HmtcError
from ..taxonomy import Taxonomy, TaxonomyIndex
from .catalog import dev_split, encode_labels, load_dataset, taxonomy_file
from .sampling import draw_fraction, draw_shots


@dataclass
class Prepared:
    """Everything a run needs from data, taxonomy and tokenizer."""

    taxonomy: Taxonomy
    index: TaxonomyIndex
    tokenizer: object
    texts: dict[str, list[str]]
    token_ids: dict[str, list[list[int]]]
    labels: dict[str, np.ndarray]
    decoding: Decoding               # the run's [decode], its "auto" flags settled on the training labels
    dataset: str
    notes: tuple[str, ...] = ()      # what a user should know about the data, said once by the trainer
    protocol: str = "raw"            # how the texts were cleaned (hmtc.data.catalog.DatasetSpec.protocol)
    sampling: dict | None = None     # what data.shots / data.train_fraction drew (None: every text)


def taxonomy_for(cfg: RunConfig) -> Taxonomy:
    """The configured taxonomy file (``.tax`` or HiAGM ``.taxonomy``), else the dataset's own."""
    d = cfg.data
    path = d.taxonomy or load_dataset(d.dataset, data_dir=d.data_dir or None, splits=[]).taxonomy_path
    return Taxonomy.load(taxonomy_file(Path(path)))      # a HiAGM .taxonomy file is converted once


def prepare(cfg: RunConfig, taxonomy: Taxonomy, tokenizer=None, splits_wanted: list[str] | None = None,
            text_prefix: str = "") -> Prepared:
    """Load the dataset, carve dev from train if needed, encode labels, tokenise (with a tokenizer;
    ``text_prefix`` before every text, as the model reads them: :attr:`EncoderModel.text_prefix`).

    The ``[decode]`` table becomes the run's :class:`~hmtc.decode.Decoding`, its ``"auto"`` flags
    (``single_path``, ``at_least_one``, ``complete``) read from the training labels.
    """
    dcfg = cfg.data
    if dcfg.data_dir and not Path(dcfg.data_dir).expanduser().is_dir():
        raise DataError("data.data_dir does not exist or is not a folder", dcfg.data_dir)
    ds = load_dataset(dcfg.dataset, data_dir=dcfg.data_dir or None, options=dcfg.options or None)
    index = taxonomy.compile()
    splits = dict(ds.splits)
    if "train" not in splits:
        raise HmtcError(f"dataset {dcfg.dataset!r} has no train split")
    if dcfg.train_limit:
        splits["train"] = splits["train"].subset(range(min(dcfg.train_limit, len(splits["train"]))))
    shots, fraction, seed = dcfg.shots, dcfg.train_fraction, cfg.train.seed
    may_be_empty: set[str] = set()
    sampling = None
    if shots != "all":
        if fraction < 1:
            raise ConfigError("data.shots and data.train_fraction are two protocols: set one of them")
        sampling = _draw_shots(splits, dcfg, taxonomy, index, seed)
        may_be_empty = {s for s, key in (("train", "shots"), ("dev", "dev_shots")) if sampling[key] == 0}
    else:
        if "dev" not in splits:
            if not dcfg.dev_fraction:
                raise DataError(f"dataset {dcfg.dataset!r}: the dev split is empty (data.dev_fraction = 0 and "
                                "the dataset has no dev split)")
            splits["train"], splits["dev"] = dev_split(splits["train"], dcfg.dev_fraction, seed)
        if fraction < 1:
            n = len(splits["train"])
            splits["train"] = splits["train"].subset(draw_fraction(n, fraction, seed).tolist())
            sampling = {"train_fraction": fraction, "train_texts": len(splits["train"]), "of": n}
    # the "auto" decoding facts come from the training labels, also when only other splits are wanted
    train_y = encode_labels(splits["train"], taxonomy)
    if splits_wanted is not None:
        splits = {k: v for k, v in splits.items() if k in splits_wanted}
    for name, ex in splits.items():            # refused before any training, not after it
        if not len(ex) and name not in may_be_empty:
            why = " (data.dev_fraction = 0 and the dataset has no dev split)" if name == "dev" else ""
            raise DataError(f"dataset {dcfg.dataset!r}: the {name} split is empty{why}")
    labels = {name: train_y if name == "train" else encode_labels(ex, taxonomy) for name, ex in splits.items()}
    texts = {name: list(ex.texts) for name, ex in splits.items()}
    token_ids = ({name: tokenize(tokenizer, [text_prefix + x for x in t], dcfg.max_length)
                  for name, t in texts.items()}
                 if tokenizer is not None else {})
    decoding = Decoding.resolve(cfg.decode, index, train_y)
    notes = []
    for split in ("train", "dev"):
        short = (sampling or {}).get(f"{split}_short")
        if short:
            listed = ", ".join(f"{n} ({c})" for n, c in list(short.items())[:8])
            wanted = sampling["shots" if split == "train" else "dev_shots"]
            notes.append(f"{len(short)} node(s) have fewer than {wanted} {split} texts "
                         f"to draw from: {listed}{', ...' if len(short) > 8 else ''}")
    internal_only = int((train_y.any(1) & ~(train_y & index.leaf_mask).any(1)).sum())
    if internal_only:
        notes.append(f"{internal_only} of {len(train_y)} training samples carry only internal nodes (no leaf); "
                     "leaf-level metrics count none for them")
    return Prepared(taxonomy, index, tokenizer, texts, token_ids, labels, decoding,
                    dcfg.dataset, tuple(notes), ds.protocol, sampling)


def _draw_shots(splits: dict, dcfg: DataConfig, taxonomy: Taxonomy, index: TaxonomyIndex, seed: int) -> dict:
    """Replace ``splits["train"]`` and ``splits["dev"]`` by the few-shot draws of ``data.shots`` and
    ``data.dev_shots`` (:func:`hmtc.data.sampling.draw_shots`); what was drawn.

    Dev texts come from the dataset's dev split when it has one, else from the training texts the
    train draw left (``dev_shots = "all"``: ``data.dev_fraction`` of them)."""
    k, dev_k = dcfg.shots, dcfg.dev_shots
    dev_k = k if dev_k == "shots" else dev_k
    train = splits["train"]
    y = encode_labels(train, taxonomy)
    picked, short = draw_shots(y, index, k, seed, stream=0)
    dev_short: dict[str, int] = {}
    if "dev" in splits:
        if dev_k != "all":
            dev_picked, dev_short = draw_shots(encode_labels(splits["dev"], taxonomy), index, dev_k, seed, stream=1)
            splits["dev"] = splits["dev"].subset(dev_picked.tolist())
    else:
        taken = np.zeros(len(train), dtype=bool)
        taken[picked] = True
        if dev_k == "all":
            rest = np.flatnonzero(~taken)
            n_dev = min(len(rest), max(1, round(len(train) * dcfg.dev_fraction)))
            dev_picked = np.sort(np.random.default_rng([seed, 1]).permutation(rest)[:n_dev])
        else:
            dev_picked, dev_short = draw_shots(y, index, dev_k, seed, stream=1, exclude=taken)
        splits["dev"] = train.subset(dev_picked.tolist())
    splits["train"] = train.subset(picked.tolist())
    return {"shots": k, "dev_shots": dev_k, "train_texts": len(splits["train"]), "dev_texts": len(splits["dev"]),
            "train_short": short, "dev_short": dev_short}


