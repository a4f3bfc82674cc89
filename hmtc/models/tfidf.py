"""Model-free reference: TF-IDF n-grams + one binary linear classifier per taxonomy node.

    x = TF-IDF(text)            char_wb / char / word n-grams (scikit-learn TfidfVectorizer)
    s_i = w_i · x + b_i         one-vs-rest LinearSVC (or logistic regression) for every node

Scores are decision values (S, N) in the index's column order; 0 is the decision boundary as
for a logit, so threshold tuning, decoders, metrics and ``hmtc eval`` / ``hmtc predict`` work as
for the neural models. A node with no positive training sample gets the constant score
``-CONSTANT`` (``+CONSTANT`` when every sample is positive).

``hmtc train`` with ``[model] name = "tfidf"`` runs :func:`fit_tfidf` (one pass, no epochs)
instead of the training loop. The checkpoint is safetensors + JSON, never a pickle:

    tfidf.safetensors   idf (V,), coef (N, V) float32, intercept (N,) float32
    vocabulary.json     term -> column of coef
    tfidf.json          vectorizer and classifier options
    taxonomy.tax, labels.json, checkpoint.json   as in every checkpoint
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import safetensors.numpy
from rich.console import Console

from ..checkpoint import Checkpoint, write_checkpoint_meta
from ..errors import ConfigError
from ..io import atomic_dir, atomic_write_json
from ..taxonomy import Taxonomy, TaxonomyIndex
from . import MODELS, make_config

if TYPE_CHECKING:
    from ..train import Prepared

CONSTANT = 50.0      # far beyond any tuned threshold, and exp(50) still fits in float32
# the TfidfVectorizer settings that shape transform(), stored to rebuild it exactly
_VECTORIZER_KEYS = ("analyzer", "ngram_range", "lowercase", "strip_accents", "token_pattern", "binary",
                    "norm", "use_idf", "smooth_idf", "sublinear_tf")


@dataclass
class TfidfConfig:
    analyzer: str = "char_wb"       # char_wb | char | word
    ngram_range: list[int] = field(default_factory=lambda: [1, 3])
    min_df: int | float = 1
    max_features: int = 0           # 0: no limit
    sublinear_tf: bool = False
    classifier: str = "svm"         # svm (LinearSVC) | logreg (LogisticRegression)
    C: float = 1.0
    targets: str = "nodes"          # nodes: a scorer per node | leaves: leaves only, a parent scores
                                    # the max of its children (flat one-vs-rest, ancestors implied)

    def __post_init__(self):
        if self.classifier not in ("svm", "logreg"):
            raise ConfigError(f"unknown tfidf classifier {self.classifier!r}; use svm or logreg")
        if self.targets not in ("nodes", "leaves"):
            raise ConfigError(f"unknown tfidf targets {self.targets!r}; use nodes or leaves")

    def to_dict(self) -> dict:
        return asdict(self)


@MODELS.register("tfidf")
class TfidfModel:
    """A fitted vectorizer with one linear scorer per node: ``scores = X @ coef.T + intercept``.

    Parameters
    ----------
    vectorizer : sklearn.feature_extraction.text.TfidfVectorizer
        Fitted (``vocabulary_`` and ``idf_`` set).
    coef : ndarray of float32, shape (N, V)
    intercept : ndarray of float32, shape (N,)
    classifier : dict
        Classifier options, kept for the record.
    """

    config_class = TfidfConfig

    def __init__(self, vectorizer, coef: np.ndarray, intercept: np.ndarray, classifier: dict,
                 index: TaxonomyIndex | None = None):
        self.vectorizer, self.coef, self.intercept, self.classifier = vectorizer, coef, intercept, classifier
        self.index = index

    @classmethod
    def fit(cls, texts: list[str], y: np.ndarray, config: TfidfConfig, seed: int = 0,
            index: TaxonomyIndex | None = None) -> "TfidfModel":
        """Fit the vectorizer on ``texts`` and one binary classifier per column of ``y`` (S, N)
        (per leaf column only, with ``targets = "leaves"``; ``index`` is then required)."""
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.svm import LinearSVC

        vec = TfidfVectorizer(analyzer=config.analyzer, ngram_range=tuple(config.ngram_range),
                              min_df=config.min_df, max_features=config.max_features or None,
                              sublinear_tf=config.sublinear_tf, dtype=np.float32)
        x = vec.fit_transform(texts)
        y = np.asarray(y, dtype=bool)
        coef = np.zeros((y.shape[1], x.shape[1]), dtype=np.float32)
        intercept = np.empty(y.shape[1], dtype=np.float32)
        leaves_only = config.targets == "leaves"
        for i, col in enumerate(y.T):
            if leaves_only and not index.leaf_mask[i]:
                continue                            # scored from its children at prediction time
            if col.all() or not col.any():          # nothing to separate
                intercept[i] = CONSTANT if col.any() else -CONSTANT
                continue
            clf = (LinearSVC(C=config.C, random_state=seed) if config.classifier == "svm"
                   else LogisticRegression(C=config.C, max_iter=1000, random_state=seed))
            clf.fit(x, col)
            coef[i], intercept[i] = clf.coef_[0], clf.intercept_[0]
        return cls(vec, coef, intercept, {"name": config.classifier, "C": config.C,
                                          "targets": config.targets}, index)

    def scores(self, texts: list[str]) -> np.ndarray:
        """Decision values (len(texts), N), float32."""
        raw = np.asarray(self.vectorizer.transform(texts) @ self.coef.T) + self.intercept
        if self.classifier.get("targets", "nodes") == "nodes":
            return raw
        index = self.index                          # a parent scores the max of its children
        out = np.where(index.leaf_mask, raw, -np.inf).astype(np.float32)
        for sl in reversed(index.level_slices[1:]):
            kids = np.arange(sl.start, sl.stop)
            child = np.repeat(kids, index.n_parents[kids])
            parents = index.parent_idx[index.parent_ptr[sl.start]:index.parent_ptr[sl.stop]]
            np.maximum.at(out, (slice(None), parents), out[:, child])
        return out

    def save(self, folder: str | Path, taxonomy: Taxonomy, config: dict) -> Path:
        """Write a checkpoint folder atomically (built aside, then renamed into place)."""
        folder = Path(folder)
        vec = self.vectorizer
        params = {k: v for k, v in vec.get_params().items() if k in _VECTORIZER_KEYS}
        with atomic_dir(folder) as tmp:
            safetensors.numpy.save_file({"idf": vec.idf_.astype(np.float32), "coef": self.coef,
                                         "intercept": self.intercept}, str(tmp / "tfidf.safetensors"))
            atomic_write_json(tmp / "vocabulary.json", {t: int(i) for t, i in vec.vocabulary_.items()})
            atomic_write_json(tmp / "tfidf.json", {"vectorizer": params, "classifier": self.classifier})
            write_checkpoint_meta(tmp, taxonomy, config)
        return folder

    @classmethod
    def load(cls, folder: str | Path, index: TaxonomyIndex | None = None) -> "TfidfModel":
        """Rebuild from a checkpoint folder: the vectorizer from its vocabulary and idf."""
        from sklearn.feature_extraction.text import TfidfVectorizer

        folder = Path(folder)
        meta = json.loads((folder / "tfidf.json").read_text(encoding="utf-8"))
        arrays = safetensors.numpy.load_file(str(folder / "tfidf.safetensors"))
        params = meta["vectorizer"] | {"ngram_range": tuple(meta["vectorizer"]["ngram_range"])}
        vec = TfidfVectorizer(**params, dtype=np.float32)
        vec.vocabulary_ = json.loads((folder / "vocabulary.json").read_text(encoding="utf-8"))
        vec.idf_ = arrays["idf"]
        return cls(vec, arrays["coef"], arrays["intercept"], meta["classifier"], index)


@dataclass
class TfidfCheckpoint(Checkpoint):
    """A loaded tfidf checkpoint (``model`` and ``tokenizer`` are None)."""

    tfidf: TfidfModel

    def scores(self, texts: list[str], batch_size: int | None = None, bf16: bool | None = None,
               progress=None) -> np.ndarray:
        """Decision values (len(texts), N); the other arguments exist for interface parity."""
        return self.tfidf.scores(texts)


def load_tfidf(folder: Path, taxonomy: Taxonomy, index: TaxonomyIndex, config: dict,
               decode: dict) -> TfidfCheckpoint:
    """The tfidf branch of :func:`hmtc.checkpoint.load_checkpoint`."""
    return TfidfCheckpoint(None, None, taxonomy, index, config, decode, Path(folder),
                           tfidf=TfidfModel.load(folder, index))


def fit_tfidf(cfg: dict, run_dir: Path, console: Console | None = None) -> tuple[dict, Prepared]:
    """Fit a tfidf run in one pass; ``Trainer.fit`` hands tfidf configs here.

    Writes ``run.json``, ``config.json``, ``best/`` and its copy ``last/`` (with a
    ``train_state.json`` giving the fit time and dev figures to the run record).

    Returns
    -------
    state : dict
        Training state, ``epoch`` set to the configured epochs (the run is complete).
    data : hmtc.train.Prepared
    """
    from ..decode import decode
    from ..metrics import evaluate
    from ..record import command_line, git_commit, machine_info, now
    from ..train import prepare, taxonomy_for

    options = make_config("tfidf", cfg["model"]["options"])     # option errors before loading data
    console = console or Console(stderr=True)
    t0 = time.time()
    data = prepare(cfg, taxonomy_for(cfg))
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "config.json", cfg)
    atomic_write_json(run_dir / "run.json", {"command": command_line(), "git_commit": git_commit(),
                                             "started": now(), "machine": machine_info()})
    n_train = len(data.texts["train"])
    console.print(f"[bold]{cfg['name']}[/]: {n_train} train / {len(data.texts['dev'])} dev, "
                  f"{data.index.n_nodes} nodes in {data.index.depth} levels, tfidf; "
                  f"setup {time.time() - t0:.1f}s")
    t1 = time.time()
    model = TfidfModel.fit(data.texts["train"], data.labels["train"], options, cfg["train"]["seed"], data.index)
    seconds = time.time() - t1
    pred = decode(model.scores(data.texts["dev"]), data.index, cfg["decode"]["method"], 0.0, data.single_path)
    dev = evaluate(data.labels["dev"], pred, data.index, include_per_label=False)
    rec = {"epoch": 1, "seconds": round(seconds, 1), "samples_per_s": round(n_train / seconds, 2),
           "dev_micro_f1": dev["micro_f1"], "dev_macro_f1": dev["macro_f1"]}
    state = {"epoch": 1, "best_epoch": 1, "train_seconds": seconds, "history": [rec]}
    model.save(run_dir / "best", data.taxonomy, cfg)
    with atomic_dir(run_dir / "last") as tmp:
        # hard links save a second copy of coef; files are only ever replaced, never edited
        shutil.copytree(run_dir / "best", tmp, dirs_exist_ok=True, copy_function=os.link)
        atomic_write_json(tmp / "train_state.json", state)
    console.print(f"fit {seconds:.1f}s, {len(model.vectorizer.vocabulary_):,} terms; dev micro-F1 "
                  f"{dev['micro_f1']:.4f} macro-F1 {dev['macro_f1']:.4f}")
    return {**state, "epoch": cfg["train"]["epochs"]}, data
