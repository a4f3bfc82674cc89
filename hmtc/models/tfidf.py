"""Model-free reference: TF-IDF n-grams + one binary linear classifier per taxonomy node.

    x = TF-IDF(text)            char_wb / char / word n-grams (scikit-learn TfidfVectorizer)
    s_i = w_i · x + b_i         one-vs-rest LinearSVC (or logistic regression) for every node

Scores are decision values (S, N) in the index's column order; 0 is the decision boundary as
for a logit, so threshold tuning, decoders, metrics and ``hmtc eval`` / ``hmtc predict`` work as
for the neural models. A node with no positive training sample gets the constant score
``-CONSTANT`` (``+CONSTANT`` when every sample is positive).

The model is fitted in one pass (``one_pass``: ``hmtc train`` calls ``fit`` instead of running
epochs). Its files in a checkpoint folder are safetensors + JSON, never a pickle:

    tfidf.safetensors   idf (V,), coef (N, V) float32, intercept (N,) float32
    vocabulary.json     term -> column of coef
    tfidf.json          vectorizer and classifier options
    taxonomy.tax, labels.json, checkpoint.json   as in every checkpoint
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import safetensors.numpy

from ..config import ModelConfig, TextSpec
from ..errors import ConfigError
from ..io import atomic_write_json
from ..taxonomy import TaxonomyIndex
from .base import MODELS, Model, make_config

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


@MODELS.register("tfidf")
class TfidfModel(Model):
    """A fitted vectorizer with one linear scorer per node: ``scores = X @ coef.T + intercept``.

    Parameters
    ----------
    config : TfidfConfig
    index : TaxonomyIndex
        The compiled taxonomy (parents score the max of their children with ``targets = "leaves"``).

    Attributes
    ----------
    vectorizer_ : sklearn.feature_extraction.text.TfidfVectorizer
        Fitted (``vocabulary_`` and ``idf_`` set).
    coef_ : ndarray of float32, shape (N, V)
    intercept_ : ndarray of float32, shape (N,)
    """

    config_class = TfidfConfig
    one_pass = True

    def __init__(self, config: TfidfConfig, index: TaxonomyIndex):
        self.config, self.index = config, index

    @classmethod
    def create(cls, config: ModelConfig, text: TextSpec, index: TaxonomyIndex) -> "TfidfModel":
        return cls(make_config("tfidf", config.options), index)

    def fit(self, texts: Sequence[str], labels: np.ndarray, seed: int = 0) -> "TfidfModel":
        """Fit the vectorizer on ``texts`` and one binary classifier per column of ``labels`` (S, N)
        (per leaf column only, with ``targets = "leaves"``)."""
        config = self.config
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.svm import LinearSVC
        vec = TfidfVectorizer(analyzer=config.analyzer, ngram_range=tuple(config.ngram_range),
                              min_df=config.min_df, max_features=config.max_features or None,
                              sublinear_tf=config.sublinear_tf, dtype=np.float32)
        x = vec.fit_transform(list(texts))
        y = np.asarray(labels, dtype=bool)
        coef = np.zeros((y.shape[1], x.shape[1]), dtype=np.float32)
        intercept = np.empty(y.shape[1], dtype=np.float32)
        leaves_only = config.targets == "leaves"
        for i, col in enumerate(y.T):
            if leaves_only and not self.index.leaf_mask[i]:
                continue                            # scored from its children at prediction time
            if col.all() or not col.any():          # nothing to separate
                intercept[i] = CONSTANT if col.any() else -CONSTANT
                continue
            clf = (LinearSVC(C=config.C, random_state=seed) if config.classifier == "svm"
                   else LogisticRegression(C=config.C, max_iter=1000, random_state=seed))
            clf.fit(x, col)
            coef[i], intercept[i] = clf.coef_[0], clf.intercept_[0]
        self.vectorizer_, self.coef_, self.intercept_ = vec, coef, intercept
        return self

    def scores(self, texts: Sequence[str], batch_size: int | None = None, bf16: bool | None = None,
               progress=None) -> np.ndarray:
        """Decision values (len(texts), N), float32 (batch size and bf16 do not apply)."""
        raw = np.asarray(self.vectorizer_.transform(list(texts)) @ self.coef_.T) + self.intercept_
        if self.config.targets == "nodes":
            return raw
        index = self.index                          # a parent scores the max of its children
        out = np.where(index.leaf_mask, raw, -np.inf).astype(np.float32)
        for sl in reversed(index.level_slices[1:]):
            kids = np.arange(sl.start, sl.stop)
            child = np.repeat(kids, index.n_parents[kids])
            parents = index.parent_idx[index.parent_ptr[sl.start]:index.parent_ptr[sl.stop]]
            np.maximum.at(out, (slice(None), parents), out[:, child])
        return out

    def save(self, folder: Path) -> None:
        vec = self.vectorizer_
        params = {k: v for k, v in vec.get_params().items() if k in _VECTORIZER_KEYS}
        safetensors.numpy.save_file({"idf": vec.idf_.astype(np.float32), "coef": self.coef_,
                                     "intercept": self.intercept_}, str(folder / "tfidf.safetensors"))
        atomic_write_json(folder / "vocabulary.json", {t: int(i) for t, i in vec.vocabulary_.items()})
        atomic_write_json(folder / "tfidf.json", {"vectorizer": params, "classifier": {
            "name": self.config.classifier, "C": self.config.C, "targets": self.config.targets}})

    @classmethod
    def load(cls, folder: Path, config: ModelConfig, text: TextSpec, index: TaxonomyIndex) -> "TfidfModel":
        """Rebuild from a checkpoint folder: the vectorizer from its vocabulary and idf."""
        folder = Path(folder)
        meta = json.loads((folder / "tfidf.json").read_text(encoding="utf-8"))
        arrays = safetensors.numpy.load_file(str(folder / "tfidf.safetensors"))
        params = meta["vectorizer"] | {"ngram_range": tuple(meta["vectorizer"]["ngram_range"])}
        from sklearn.feature_extraction.text import TfidfVectorizer
        vec = TfidfVectorizer(**params, dtype=np.float32)
        vec.vocabulary_ = json.loads((folder / "vocabulary.json").read_text(encoding="utf-8"))
        vec.idf_ = arrays["idf"]
        model = cls.create(config, text, index)
        # the saved classifier settings decide the scoring (older checkpoints: nodes)
        model.config.targets = meta["classifier"].get("targets", "nodes")
        model.vectorizer_, model.coef_, model.intercept_ = vec, arrays["coef"], arrays["intercept"]
        return model
