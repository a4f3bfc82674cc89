"""hmtc as a scikit-learn estimator: :class:`HierarchicalClassifier`.

The estimator is a front end to the command line's own code path: :meth:`~HierarchicalClassifier.fit`
writes the texts and labels it is given as a small JSONL dataset with its TOML card and taxonomy
(``data/`` in the run folder), trains it with :class:`hmtc.train.Trainer` and evaluates it with
:func:`hmtc.evaluate.evaluate_run` (thresholds tuned on dev), exactly as ``hmtc train`` does; the
run folder it leaves is an ordinary one (``hmtc eval``, ``hmtc predict``, ``hmtc export`` and
``hmtc serve`` take it). Predictions decode as ``hmtc predict`` does (:func:`hmtc.predict.predict_texts`),
and :meth:`~HierarchicalClassifier.save` / :meth:`~HierarchicalClassifier.load` write and read the
checkpoint folder format (:mod:`hmtc.checkpoint`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
import tempfile
import warnings
import weakref
from collections.abc import Sequence
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from .config import RunConfig, _did_you_mean, load_config
from .errors import ConfigError, DataError, HmtcError
from .io import atomic_write_text
from .taxonomy import Taxonomy

if TYPE_CHECKING:
    from .checkpoint import Checkpoint

# The training and inference stack (torch, transformers, the models) is imported where it is used,
# so that `from hmtc import HierarchicalClassifier` stays under a second (benchmarks/cold_start.py).

# texts per chunk of prediction: the progress bar's step (decoding is per text, so any size gives the same labels)
_PROGRESS_CHUNK = 256

# estimator parameter -> (config table, key); None leaves the config's value
_CONFIG_KEYS = {"model": ("model", "name"), "encoder": ("model", "encoder"),
                "freeze_layers": ("model", "freeze_layers"), "epochs": ("train", "epochs"),
                "batch_size": ("train", "batch_size"), "lr": ("train", "lr"), "head_lr": ("train", "head_lr"),
                "seed": ("train", "seed"), "device": ("train", "device"), "threads": ("train", "threads"),
                "max_length": ("data", "max_length"), "dev_fraction": ("data", "dev_fraction")}


class NotFitted(HmtcError, NotFittedError):
    """The classifier is used before :meth:`HierarchicalClassifier.fit` or ``load``."""


class HierarchicalClassifier(BaseEstimator):
    """Hierarchical multi-label text classifier with scikit-learn conventions.

    Every parameter is only stored by the constructor; :meth:`fit` turns them into a run config.
    A parameter left at None takes its value from ``config``, else hmtc's default
    (``docs/config.md``).

    Parameters
    ----------
    model : str, optional
        Model family (``msml``, ``flat``, ``global``, ``local``, ``tfidf``).
    encoder : str, optional
        Built-in encoder name (``me5-small``, ``minilm-l6``), local folder or hub id.
    epochs, batch_size : int, optional
    lr : float, optional
        Learning rate of the top encoder layer.
    head_lr : float, optional
        Learning rate of everything outside the encoder.
    max_length : int, optional
        Tokens kept per text.
    seed : int, optional
        Seed of initialisation, batch order, dropout and the carved dev split.
    freeze_layers : int, optional
        Keep the lowest N encoder layers fixed.
    options : dict, optional
        The model's own options (e.g. ``{"filters": 64}`` for MSML), merged over the config's.
    config : str, Path, dict or RunConfig, optional
        A run config file (``experiments/*.toml``), a dict of tables (``{"train": {"ema": 0.999}}``)
        or a :class:`~hmtc.config.RunConfig` to start from; any key of ``docs/config.md``.
    taxonomy : Taxonomy, str or Path, optional
        The taxonomy (or a ``.tax`` file) when ``fit`` is given none; None builds it from the
        label paths. Give it when cross-validating, so that every fold knows every label.
    label_sep : str, default "/"
        Separator of path labels: ``"animal/cat"`` is the node ``animal/cat`` under ``animal``.
    output_dir : str or Path, optional
        Folder of the run folders; None: a temporary folder removed with the classifier.
    dev_fraction : float, optional
        Share of the training texts carved out (seeded) as dev when ``fit`` gets no dev set.
    device : str, optional
        ``auto``, ``cpu``, ``cuda`` or ``cuda:<n>``.
    threads : int, optional
        Torch threads (0: all cores).
    record_dir : str, default ""
        Where to write the run's record (``""``: none).
    verbose : bool, default False
        Print the training log and progress bars (training, evaluation, prediction) to stderr;
        rich draws them in a notebook's output cell too.
    text_column, label_column : str, default "text", "labels"
        The columns read when ``fit``, ``predict`` or ``score`` get a Hugging Face
        ``datasets.Dataset`` (or any object with ``column_names`` and ``data[column]``) instead
        of texts. A label column of ``ClassLabel`` integers (or lists of them) is read as the
        class names.
    scoring : str, default "leaf_micro_f1"
        The figure :meth:`score` returns: a key of :func:`hmtc.metrics.evaluate` that holds a
        number (``micro_f1``, ``macro_f1``, ``hier_f1``, ``c_micro_f1``, ``exact_match``, ...;
        ``docs/metrics.md``). ``GridSearchCV`` with no ``scoring`` of its own ranks by it.

    Attributes
    ----------
    classes_ : ndarray of str
        Node ids in the column order of :meth:`predict_scores`.
    label_classes_ : dict of str to list of str
        Each label with classes (``docs/label-classes.md``) and its classes in order; empty when
        the taxonomy has none.
    taxonomy_ : Taxonomy
    thresholds_ : float or ndarray
        The decision threshold (logit), or one per node.
    history_ : list of dict
        One row per epoch: loss, seconds, dev micro-/macro-F1 (empty for a bare checkpoint).
    metrics_ : dict or None
        ``hmtc eval``'s figures on the dev split (``metrics.json``), None when unknown.
    config_ : RunConfig
        The run config the model was trained with.
    run_dir_ : Path or None
        The run folder (None for a bare checkpoint folder).
    checkpoint_ : Checkpoint
        The loaded checkpoint that scores.
    """

    def __init__(self, model: str | None = None, encoder: str | None = None, *, epochs: int | None = None,
                 batch_size: int | None = None, lr: float | None = None, head_lr: float | None = None,
                 max_length: int | None = None, seed: int | None = None, freeze_layers: int | None = None,
                 options: dict | None = None, config: str | Path | dict | RunConfig | None = None,
                 taxonomy: Taxonomy | str | Path | None = None, label_sep: str = "/",
                 output_dir: str | Path | None = None, dev_fraction: float | None = None,
                 device: str | None = None, threads: int | None = None, record_dir: str = "",
                 verbose: bool = False, text_column: str = "text", label_column: str = "labels",
                 scoring: str = "leaf_micro_f1"):
        self.model = model
        self.encoder = encoder
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.head_lr = head_lr
        self.max_length = max_length
        self.seed = seed
        self.freeze_layers = freeze_layers
        self.options = options
        self.config = config
        self.taxonomy = taxonomy
        self.label_sep = label_sep
        self.output_dir = output_dir
        self.dev_fraction = dev_fraction
        self.device = device
        self.threads = threads
        self.record_dir = record_dir
        self.verbose = verbose
        self.text_column = text_column
        self.label_column = label_column
        self.scoring = scoring

    # ---- fitting ------------------------------------------------------------------------------
    def fit(self, texts, labels=None, dev=None,
            taxonomy: Taxonomy | str | Path | None = None) -> HierarchicalClassifier:
        """Train, tune the decision thresholds on dev and load the best checkpoint.

        Parameters
        ----------
        texts : sequence of str, or Dataset
            A list, tuple, numpy array or pandas Series; or a ``datasets.Dataset`` whose
            ``text_column`` holds the texts (and ``label_column`` the labels, unless ``labels``
            is given).
        labels : sequence or 2-D array, optional
            Per text a path string (``"animal/cat"``), a node id of ``taxonomy``, or a list (or
            set) of them; at least one per text; ancestors are implied. A 2-D ``labels``, one
            column per level as HiClass takes it (a 2-D array, a DataFrame, or rows that are all
            lists or tuples of one length, at least 2: ``[["animal", "cat"], ["plant", "rose"]]``),
            is read as one path per text: its cells from level 1 down (ids or display names),
            the deepest non-empty one the label; a shorter path ends in empty cells (``""`` or
            None), and a cell after an empty one is an error. Label sets that all have the same
            size are given as sets, which are never paths. Needed unless ``texts`` is a Dataset.
        dev : (texts, labels) or Dataset, optional
            The dev set that picks the best epoch and tunes thresholds; None carves
            ``dev_fraction`` of ``texts`` out, as ``hmtc train`` does.
        taxonomy : Taxonomy, str or Path, optional
            The taxonomy (or a ``.tax`` file); None: the ``taxonomy`` parameter, else one built
            from the label paths.

        Returns
        -------
        self

        Raises
        ------
        DataError
            A label the given taxonomy lacks (the error names it and the text), malformed texts
            or labels.
        """
        texts, label_sets, dev_texts, dev_sets = self._training_sets(texts, labels, dev)
        taxonomy = self.taxonomy if taxonomy is None else taxonomy
        if taxonomy is None:
            taxonomy = _taxonomy_of_paths({"labels": label_sets, "dev labels": dev_sets or []}, self._label_sep())
        elif not isinstance(taxonomy, Taxonomy):
            taxonomy = Taxonomy.load(taxonomy)
        return self._train(self._base_config(), taxonomy, texts, label_sets, dev_texts, dev_sets)

    def update(self, texts, labels=None, taxonomy: Taxonomy | str | Path | None = None, dev=None,
               mapping: dict[str, str] | None = None, epochs: int | None = None,
               config: dict | None = None, from_examples: bool = False) -> HierarchicalClassifier:
        """Follow a taxonomy edit and learn from new texts without training from scratch: carry the
        fitted model onto ``taxonomy`` (:func:`hmtc.migrate.migrate`: kept nodes keep their rows,
        new ones start from their names, or their examples among ``texts``), then fine-tune it on
        ``texts`` (``train.init_from``) with the fitted run's recipe.

        Parameters
        ----------
        texts, labels, dev
            As for :meth:`fit`: the update's texts (the new nodes' examples, with some of the old
            nodes' to keep them in mind) and their labels; ``dev`` tunes the thresholds again.
        taxonomy : Taxonomy, str or Path, optional
            The edited taxonomy; None keeps the fitted one.
        mapping : dict, optional
            Old node id -> new id, for renamed ids and merges (``hmtc migrate --map``).
        epochs : int, optional
            Epochs of the update (None: the fitted run's).
        config : dict, optional
            Tables merged over the fitted run's config for the update (``{"train": {"ema": 0}}``).
        from_examples : bool, default=False
            Start the new nodes from the mean of what the model reads in their texts instead of
            their names. Off by default: on DuEE it did not help after the fine-tune and made the
            update 45 % slower (experiments/findings.md, "A taxonomy that gains nodes").

        Returns
        -------
        self
        """
        from .migrate import migrate, write_migrated
        ckpt = self._fitted()
        texts, label_sets, dev_texts, dev_sets = self._training_sets(texts, labels, dev)
        taxonomy = ckpt.taxonomy if taxonomy is None else taxonomy
        if not isinstance(taxonomy, Taxonomy):
            taxonomy = Taxonomy.load(taxonomy)
        examples = None
        if from_examples:
            resolve = _resolver(taxonomy, self.label_sep)
            # labels the taxonomy lacks are left out here: training them below is the clear error
            examples = (texts, [[x for x in map(resolve, labs) if x is not None] for labs in label_sets])
        migration = migrate(ckpt, taxonomy, mapping, examples=examples)
        root = Path(tempfile.mkdtemp(prefix="hmtc-migrated-"))
        try:
            start = write_migrated(migration, ckpt, root / "migrated")
            cfg = ckpt.config.merged(config or {}).merged(
                {"train": {"init_from": str(start), **({"epochs": epochs} if epochs is not None else {})}})
            self._train(cfg, taxonomy, texts, label_sets, dev_texts, dev_sets)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        self.migration_ = migration.changes
        return self

    def set_params(self, **params) -> HierarchicalClassifier:
        """scikit-learn's ``set_params``; an unknown name is one :class:`ConfigError` naming the
        valid ones (scikit-learn's ValueError repeats the whole estimator and suggests nothing)."""
        valid = self.get_params(deep=False)
        for key in params:
            if key not in valid:
                raise ConfigError(f"set_params: unknown parameter {key!r}{_did_you_mean(key, valid)}; "
                                  f"the parameters: {', '.join(sorted(valid))}")
        return super().set_params(**params)

    def _label_sep(self) -> str:
        """``label_sep``, checked where labels are split by it: an empty one splits nothing."""
        if not isinstance(self.label_sep, str) or not self.label_sep:
            raise ConfigError(f"label_sep must be a non-empty string, the separator of a label path "
                              f"(e.g. '/'), not {self.label_sep!r}")
        return self.label_sep

    def _training_sets(self, texts, labels, dev) -> tuple:
        """(texts, label sets, dev texts, dev label sets) from what ``fit`` is handed."""
        texts, labels = self._labelled(texts, labels)
        texts = _texts(texts, "texts", blank=False)
        label_sets = _label_sets(labels, len(texts))
        dev_texts, dev_sets = None, None
        if dev is not None:
            if _is_dataset(dev):
                dev = self._labelled(dev, None)
            if not isinstance(dev, (tuple, list)) or len(dev) != 2:
                raise DataError("dev must be a (texts, labels) pair or a Dataset")
            dev_texts = _texts(dev[0], "dev texts", blank=False)
            dev_sets = _label_sets(dev[1], len(dev_texts))
        return texts, label_sets, dev_texts, dev_sets

    def _train(self, cfg: RunConfig, taxonomy: Taxonomy, texts, label_sets, dev_texts, dev_sets) -> HierarchicalClassifier:
        """Write the sets as a dataset, train ``cfg`` on it, evaluate and attach the best checkpoint."""
        resolve = _resolver(taxonomy, self._label_sep())
        splits = {"train": (texts, _node_sets(resolve, label_sets, "labels"))}
        if dev_texts is not None:
            splits["dev"] = (dev_texts, _node_sets(resolve, dev_sets, "dev labels"))
        if cfg.train.seeds:
            raise ConfigError("train.seeds: the classifier trains one seed; fit one clone per seed instead")
        run_dir, cleanup = self._new_run_dir(cfg.name)
        try:
            dataset = _write_dataset(run_dir / "data", taxonomy, splits)
            cfg = cfg.merged({"name": run_dir.name,
                              "data": {"dataset": str(dataset), "taxonomy": str(dataset.parent / "taxonomy.tax"),
                                       "data_dir": ""},
                              "train": {"output_dir": str(run_dir.parent), "record_dir": str(self.record_dir or "")}})
            from rich.console import Console

            from .loading import load_checkpoint
            from .evaluate import evaluate_run
            from .train import Trainer
            console = Console(stderr=True, quiet=not self.verbose)
            with _quiet_transformers(not self.verbose):
                trainer = Trainer(cfg, run_dir, console=console, quiet=not self.verbose)
                trainer.fit()
                metrics = evaluate_run(run_dir, console, quiet=not self.verbose)
                ckpt = load_checkpoint(run_dir / "best")
        except BaseException:
            if cleanup is not None:
                cleanup()
            raise
        if getattr(self, "_cleanup", None) is not None:
            self._cleanup()                 # a refit replaces the previous temporary run
        self._cleanup = cleanup
        self._attach(ckpt, run_dir, trainer.state_.history, metrics)
        return self

    def _base_config(self) -> RunConfig:
        """Defaults, then ``config``, then the parameters that are set, each checked as ``--set`` is."""
        if isinstance(self.config, RunConfig):
            cfg = self.config
        elif isinstance(self.config, dict):
            cfg = load_config(None).merged(self.config)
        elif self.config is not None:
            cfg = load_config(self.config)
        else:
            cfg = load_config(None)
        tables: dict = {}
        for param, (table, key) in _CONFIG_KEYS.items():
            if getattr(self, param) is not None:
                tables.setdefault(table, {})[key] = getattr(self, param)
        if self.options is not None:
            tables.setdefault("model", {})["options"] = self.options
        return cfg.merged(tables)

    def _new_run_dir(self, name: str) -> tuple[Path, weakref.finalize | None]:
        """A fresh run folder under ``output_dir``, or in a temporary folder removed with this
        object (the finalizer that removes it is returned)."""
        if self.output_dir is None:
            root = Path(tempfile.mkdtemp(prefix="hmtc-"))
            # the run (weights, resume state) can be large: it goes with the classifier
            cleanup = weakref.finalize(self, shutil.rmtree, root, True)
        else:
            root = Path(self.output_dir)
            root.mkdir(parents=True, exist_ok=True)
            cleanup = None
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root)), cleanup

    def _attach(self, ckpt: Checkpoint, run_dir: Path | None, history: list, metrics: dict | None) -> None:
        """Set the fitted state from a loaded checkpoint."""
        import torch

        from .inference import pick_device
        from .label_classes import label_classes
        if isinstance(ckpt.model, torch.nn.Module):
            ckpt.model.to(pick_device(ckpt.config.train.device))
        self.checkpoint_ = ckpt
        self.config_ = ckpt.config
        self.taxonomy_ = ckpt.taxonomy
        self.classes_ = np.array(ckpt.index.ids, dtype=object)
        lc = label_classes(ckpt.index)
        self.label_classes_ = {lab: list(names) for lab, names in zip(lc.labels, lc.classes)}
        self.thresholds_ = ckpt.decoding.thresholds
        self.history_ = list(history)
        self.metrics_ = metrics
        self.run_dir_ = run_dir

    # ---- prediction ---------------------------------------------------------------------------
    def predict(self, texts, return_unsure: bool = False):
        """Consistent label sets, decoded with the thresholds tuned on dev, as ``hmtc predict`` does.

        Parameters
        ----------
        texts : sequence of str, str, or Dataset
            The texts; one string is one text (scikit-learn's estimators take only sequences:
            this one answers a single text with its own labels, not a list of one).
        return_unsure : bool, default False
            Also return, per text, the predicted nodes that are not above their threshold, kept
            only because decoding forces an answer (as scikit-learn's ``return_std``).

        Returns
        -------
        labels : list of list of str
            Per text the predicted node ids, ancestors included; for one string, its list.
        unsure : list of list of str
            With ``return_unsure``: ``(labels, unsure)``, shaped alike.
        """
        single = isinstance(texts, str)
        rows = self._predicted([texts] if single else _texts(self._unlabelled(texts)))
        labels, unsure = [row["labels"] for row in rows], [row["unsure"] for row in rows]
        if single:
            labels, unsure = labels[0], unsure[0]
        return (labels, unsure) if return_unsure else labels

    def predict_top_k(self, texts, k: int = 5):
        """The ``k`` most probable nodes of each level, decoded or not, as ``hmtc predict --top-k``
        ranks them (:func:`hmtc.predict.ranked`): for browsing alternatives, or a labelling UI.

        Parameters
        ----------
        texts : sequence of str, str, or Dataset
            One string is one text, as for :meth:`predict`.
        k : int, default 5

        Returns
        -------
        list
            Per text one list per level (level 1 first) of ``(node id, probability)`` pairs, most
            probable first, probabilities as :meth:`predict_proba` gives them rounded to 4
            places; ``[]`` for an empty text, which is not scored. For one string, its list.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ConfigError(f"k must be a whole number of nodes, at least 1, not {k!r}")
        single = isinstance(texts, str)
        rows = self._predicted([texts] if single else _texts(self._unlabelled(texts)), top_k=int(k))
        ranks = [[[(node["id"], node["score"]) for node in level["nodes"]] for level in row["top_k"]]
                 for row in rows]
        return ranks[0] if single else ranks

    def _predicted(self, texts: list[str], top_k: int = 0) -> list[dict]:
        """``hmtc predict``'s result of each text (:func:`hmtc.predict.predict_texts`), with a
        progress bar on stderr when ``verbose``."""
        from rich.console import Console

        from .predict import predict_texts
        from .progress import progress_bar
        ckpt, rows = self._fitted(), []
        with progress_bar(Console(stderr=True), disable=not self.verbose) as progress:
            task = progress.add_task("predict", total=len(texts), info="")
            for row in predict_texts(ckpt, texts, chunk=_PROGRESS_CHUNK, top_k=top_k):
                rows.append(row)
                progress.advance(task)
        return rows

    def predict_scores(self, texts) -> np.ndarray:
        """Every node's logit, shape (n_texts, n_nodes), columns in :attr:`classes_` order."""
        return self._fitted().scores(_texts(self._unlabelled(texts)))

    def predict_proba(self, texts) -> np.ndarray:
        """Every node's probability, shape (n_texts, n_nodes), undecoded: σ(logit / T_level) with the
        temperatures fitted on dev (:mod:`hmtc.calibration`), made to agree with the taxonomy when
        ``decode.consistent_scores`` asks, as ``hmtc predict`` reports them."""
        from .calibration import calibrated, consistent
        from .predict import consistent_choice
        ckpt = self._fitted()
        return consistent(calibrated(self.predict_scores(texts), ckpt.decoding.temperatures, ckpt.index),
                          ckpt.index, consistent_choice(ckpt))

    def predict_classes(self, texts) -> list[dict[str, str]]:
        """Per text each label's class (``{"joy": "weak", ...}``), as ``hmtc predict`` decodes it:
        the class the decoded set keeps, the label's first class where it keeps none; ``{}`` for
        an empty text. For taxonomies with labels with classes (``docs/label-classes.md``)."""
        self._has_label_classes()
        return [{lab: c["class"] for lab, c in row["classes"].items()}
                for row in self._predicted(_texts(self._unlabelled(texts)))]

    def predict_class_proba(self, texts) -> dict[str, np.ndarray]:
        """Each label's softmax over its classes, undecoded: ``{label: ndarray (n_texts, K_l)}``,
        columns in :attr:`label_classes_` order, each row summing to 1
        (:func:`hmtc.predict.class_probabilities`). Every text is scored, an empty one too (as
        :meth:`predict_proba` does), where :meth:`predict_classes` gives ``{}``."""
        from .label_classes import label_classes
        from .predict import checkpoint_class_probabilities
        self._has_label_classes()
        ckpt = self._fitted()
        lc = label_classes(ckpt.index)
        p = checkpoint_class_probabilities(ckpt, self.predict_scores(texts), lc)
        return {lab: p[:, l, :len(names)] for l, (lab, names) in enumerate(zip(lc.labels, lc.classes))}

    def _has_label_classes(self) -> None:
        self._fitted()
        if not self.label_classes_:
            raise HmtcError("this taxonomy has no labels with classes (docs/label-classes.md); "
                            "use predict or predict_proba")

    def score(self, texts, labels=None) -> float:
        """One figure of the decoded predictions on ``texts``: the ``scoring`` parameter's key of
        :meth:`evaluate` (leaf micro-F1 by default), the number scikit-learn's searches rank by.

        Parameters
        ----------
        texts, labels
            As for :meth:`fit`. Gold labels the fitted model does not know count as misses,
            with a warning (:meth:`evaluate`).

        Returns
        -------
        float
            NaN where the figure is undefined (``zero_division``).
        """
        return _figure(self.evaluate(texts, labels), self.scoring)

    def evaluate(self, texts, labels=None) -> dict:
        """hmtc's metrics (:func:`hmtc.metrics.evaluate`) of the decoded predictions on ``texts``:
        every figure ``hmtc eval`` reports, for when one number (:meth:`score`) is not enough.

        Parameters
        ----------
        texts, labels
            As for :meth:`fit`.

        Returns
        -------
        dict
            ``micro_f1``, ``macro_f1``, ``leaf_micro_f1``, ``per_level``, ``hier_f1``,
            ``per_label``, ... (``docs/metrics.md``). A gold label the fitted taxonomy lacks
            (e.g. a cross-validation fold's label that the training folds never had) is scored
            as a node of its own, never predicted: a miss in every figure and a row of
            ``per_label``; a ``UserWarning`` names the first and how many.
        """
        from .label_classes import with_absent_classes
        from .metrics import evaluate
        ckpt = self._fitted()
        texts, labels = self._labelled(texts, labels)
        texts = _texts(texts)
        label_sets = _label_sets(labels, len(texts))
        taxonomy, gold = _scoring_taxonomy(self.taxonomy_, label_sets, self._label_sep())
        index = ckpt.index if taxonomy is self.taxonomy_ else taxonomy.compile()
        gold = with_absent_classes(index.indicator(gold), index)       # an unmentioned label is in its first class
        return evaluate(gold, index.indicator(self.predict(texts)), index)

    def _labelled(self, texts, labels) -> tuple:
        """(texts, labels): the columns of a Dataset (``labels`` given wins over its label
        column), else as given; labels are required."""
        if _is_dataset(texts):
            labels = _column(texts, self.label_column, "label_column") if labels is None else labels
            texts = _column(texts, self.text_column, "text_column")
        if labels is None:
            raise DataError("no labels: pass labels, or a Dataset with the label_column "
                            f"{self.label_column!r}")
        return texts, labels

    def _unlabelled(self, texts):
        """The texts: a Dataset's text column, else as given."""
        return _column(texts, self.text_column, "text_column") if _is_dataset(texts) else texts

    def _fitted(self) -> Checkpoint:
        if not hasattr(self, "checkpoint_"):
            raise NotFitted(f"this {type(self).__name__} is not fitted yet: call fit() or load() first")
        return self.checkpoint_

    # ---- persistence --------------------------------------------------------------------------
    def save(self, folder: str | Path, overwrite: bool = False) -> Path:
        """Write a checkpoint folder (the format of a run's ``best/``: ``hmtc predict``,
        ``hmtc eval``, ``hmtc export`` and ``hmtc serve`` take it), a plain folder that copies and
        archives like any other; returns it.

        An existing ``folder`` is replaced only when it is a checkpoint holding nothing but its
        own files (an earlier save) or with ``overwrite``; a run folder, a folder with other
        files or a file is refused, so a save never deletes what it did not write.
        """
        from .checkpoint import is_checkpoint, read_support, save_checkpoint
        ckpt, folder = self._fitted(), Path(folder)
        if folder.is_symlink() or folder.is_file():
            raise HmtcError("is a file or a link, not a folder to save a checkpoint in", folder)
        if folder.is_dir() and any(folder.iterdir()) and not overwrite and not is_checkpoint(folder):
            raise HmtcError("is not empty and not a checkpoint folder saved before (a run folder, or other "
                            "files): choose another folder, or save(..., overwrite=True) to replace it", folder)
        decode = json.dumps(ckpt.decode, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
        return save_checkpoint(folder, ckpt.model, ckpt.taxonomy, ckpt.config, plain=True,
                               extra_files={"decode.json": decode.encode("utf-8")} if ckpt.decode else None,
                               support=read_support(ckpt.path))

    @classmethod
    def load(cls, folder: str | Path, **params) -> HierarchicalClassifier:
        """A fitted classifier from a checkpoint folder, or a run folder (its ``best/``), written by
        :meth:`save` or by ``hmtc train``.

        Its ``config`` parameter is the checkpoint's run config, so a clone retrains the same
        recipe; ``params`` (e.g. ``label_sep``) set the others.
        """
        from .loading import load_checkpoint
        from .checkpoint import locate
        run_dir, ckpt_dir = locate(folder)
        with _quiet_transformers(not params.get("verbose", False)):
            ckpt = load_checkpoint(ckpt_dir)
        is_run = (run_dir / "best").resolve() == ckpt_dir.resolve()
        state = run_dir / "last" / "train_state.json"
        history = json.loads(state.read_text(encoding="utf-8")).get("history", []) \
            if is_run and state.is_file() else []
        metrics_path = run_dir / "metrics.json"
        metrics = json.loads(metrics_path.read_text(encoding="utf-8")) if is_run and metrics_path.is_file() else None
        est = cls(**{"config": ckpt.config, **params})
        est._attach(ckpt, run_dir if is_run else None, history, metrics)
        return est

    def __getstate__(self):
        # checkpoints are safetensors + JSON, never a pickle: a fitted classifier travels as its folder
        if "checkpoint_" in self.__dict__:
            raise HmtcError("a fitted HierarchicalClassifier is not pickled: save it with .save(folder) "
                            "(safetensors + JSON) and load it with HierarchicalClassifier.load(folder)")
        return dict(super().__getstate__())


def metric_scorer(metric: str = "micro_f1"):
    """A scikit-learn ``scoring`` callable: one figure of :meth:`HierarchicalClassifier.evaluate`,
    whatever the estimator's own ``scoring``; several of them score one search several ways.

    Examples
    --------
    ``GridSearchCV(HierarchicalClassifier(), {"lr": [1e-4, 3e-4]}, scoring=metric_scorer("macro_f1"))``
    """
    return functools.partial(_score_metric, metric=metric)


def _score_metric(estimator: HierarchicalClassifier, texts, labels, metric: str) -> float:
    return _figure(estimator.evaluate(texts, labels), metric)


def _figure(figures: dict, key: str) -> float:
    """One number of :func:`hmtc.metrics.evaluate`'s result (NaN for None: undefined)."""
    value = figures.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float, type(None))) or key not in figures:
        numbers = sorted(k for k, v in figures.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
        raise ConfigError(f"scoring={key!r} is no figure of hmtc.metrics.evaluate; one of: {', '.join(numbers)}")
    return float("nan") if value is None else float(value)


@contextlib.contextmanager
def _quiet_transformers(quiet: bool):
    """transformers' weight-loading progress bars off while ``quiet``, as they were afterwards."""
    from transformers.utils import logging as hf_logging
    was = hf_logging.is_progress_bar_enabled()
    if quiet and was:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if quiet and was:
            hf_logging.enable_progress_bar()


# ---- input --------------------------------------------------------------------------------------
def _is_dataset(data) -> bool:
    """A Hugging Face ``datasets.Dataset`` or anything shaped like one (``column_names`` and
    ``data[column]``): duck-typed, so that ``datasets`` stays an optional dependency."""
    return hasattr(data, "column_names") and hasattr(data, "__getitem__")


def _column(data, column: str, param: str) -> list:
    """One column of a Dataset as a list; ``ClassLabel`` integers become their class names."""
    if isinstance(data.column_names, dict):         # a DatasetDict: split name -> its columns
        raise DataError(f"a DatasetDict of the splits {', '.join(map(repr, data.column_names))}: "
                        "pass one split, e.g. data['train']")
    if column not in data.column_names:
        raise DataError(f"the dataset has no column {column!r} (parameter {param}); its columns: "
                        f"{', '.join(map(repr, data.column_names))}")
    values = list(data[column])         # datasets >= 4 hands out a lazy Column, not a list
    feature = (getattr(data, "features", None) or {}).get(column)
    names = getattr(getattr(feature, "feature", feature), "names", None)    # ClassLabel or a list of it
    if not names:
        return values
    name = functools.partial(_class_name, names, column)
    return [[name(v) for v in row] if isinstance(row, (list, tuple)) else name(row) for row in values]


def _class_name(names: list[str], column: str, value):
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= value < len(names):
        return names[value]
    raise DataError(f"column {column!r}: {value!r} is not a class id 0..{len(names) - 1}")


def _sequence(values, what: str) -> list:
    """A list from a list, tuple, numpy array or pandas Series (anything with ``tolist``)."""
    if isinstance(values, (str, bytes)) or not (hasattr(values, "tolist") or isinstance(values, Sequence)):
        raise DataError(f"{what} must be a sequence (list, array or Series), not {type(values).__name__}")
    return values.tolist() if hasattr(values, "tolist") else list(values)


def _texts(texts, what: str = "texts", blank: bool = True) -> list[str]:
    """A list of strings; ``blank=False`` refuses empty ones (training data)."""
    out = _sequence(texts, what)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise DataError(f"{what}[{i}] is a {type(t).__name__}, not a string")
        if not blank and not t.strip():
            raise DataError(f"{what}[{i}] is empty")
    return out


class _Path(tuple):
    """One row of a 2-D ``labels`` (HiClass's form): the cells of one path from level 1 down,
    each a node id or a display name; it names the deepest, its ancestors implied."""


def _label_sets(labels, n: int) -> list[list[str | _Path]]:
    """Per text its labels: strings (node ids or ``label_sep``-paths), or one :class:`_Path` per
    text when ``labels`` is 2-D (:func:`_is_table`)."""
    rows = _sequence(labels.to_numpy() if getattr(labels, "ndim", 1) == 2 and hasattr(labels, "to_numpy")
                     else labels, "labels")
    if len(rows) != n:
        raise DataError(f"{len(rows)} label entries for {n} texts")
    if _is_table(labels, rows):
        return [[_path(row, i)] for i, row in enumerate(rows)]
    return [_row_labels(row, i) for i, row in enumerate(rows)]


def _is_table(labels, rows: list) -> bool:
    """Whether ``labels`` is 2-D, one column per level: a 2-D array or DataFrame, or rows that
    are all lists or tuples of one length of at least 2 (sets never: they are label sets)."""
    if getattr(labels, "ndim", 1) == 2:
        return True
    table = bool(rows) and all(isinstance(r, (list, tuple)) for r in rows) and \
        len({len(r) for r in rows}) == 1 and len(rows[0]) >= 2
    if table:               # the same shape as label sets that all happen to have one size: say which
        warnings.warn(f"labels: every text has a list of {len(rows[0])}, read as one path per text (one "
                      "column per level, as HiClass takes it); give a set per text for separate labels",
                      UserWarning, stacklevel=4)
    return table


def _row_labels(row, i: int) -> list[str]:
    """The labels of text ``i``: one string, or a list, tuple, array or set of them."""
    labs = [row] if isinstance(row, str) else sorted(row, key=str) if isinstance(row, (set, frozenset)) \
        else _sequence(row, f"labels of text {i}")
    if not labs:
        raise DataError(f"text {i} has no label; every text needs at least one")
    if not all(isinstance(lab, str) and lab.strip() for lab in labs):
        raise DataError(f"labels of text {i} must be non-empty strings, got {labs!r}")
    for lab in labs:
        _unpadded(lab, i)
    return labs


def _path(row, i: int) -> str | _Path:
    """The path of text ``i`` from its row of a 2-D ``labels``: the cells up to the first empty
    one (``""``, None or NaN); one cell is a plain label."""
    cells = [_cell(c, i) for c in row]
    depth = next((k for k, c in enumerate(cells) if not c), len(cells))
    if not depth:
        raise DataError(f"text {i} has no label; every text needs at least one")
    if any(cells[depth:]):
        raise DataError(f"labels of text {i} ({list(row)!r}) are read as one path, a cell per level "
                        "(labels is 2-D): a cell follows an empty one; end a shorter path in empty cells")
    return cells[0] if depth == 1 else _Path(cells[:depth])


def _cell(value, i: int) -> str:
    """A cell of a 2-D ``labels`` row, stripped; ``""`` for an empty one."""
    if value is None or (isinstance(value, float) and value != value):       # None / NaN: pandas' gaps
        return ""
    if not isinstance(value, str):
        raise DataError(f"labels of text {i} must be strings, got {value!r}")
    return _unpadded(value, i)


def _unpadded(label: str, i: int) -> str:
    """``label`` of text ``i``, refused when spaces surround it: no node id has them, so it would
    name no node (or, stripped in silence, another label than the one written)."""
    if label != label.strip():
        raise DataError(f"labels of text {i}: {label!r} has a leading or trailing space; strip the labels")
    return label


def _path_text(label: str | _Path, sep: str) -> str:
    """A label as a ``sep``-path string, for :meth:`Taxonomy.from_paths`."""
    if isinstance(label, str):
        return label
    for cell in label:
        if sep in cell:
            raise DataError(f"the path {list(label)!r} has a cell holding label_sep {sep!r}: a row of a 2-D "
                            "labels is one path, a node per level (give label sets of one size as sets, and "
                            "the taxonomy for node ids that hold label_sep)")
    return sep.join(label)


def _taxonomy_of_paths(sets: dict[str, list[list]], sep: str) -> Taxonomy:
    """The taxonomy the label paths of ``sets`` (what -> label sets) spell out. A path with an
    empty segment (``sep`` at its start or end, or twice in a row) is refused naming the label
    and its text: it would make a node of an empty id, or one whose id ends in ``sep``."""
    paths = []
    for what, label_sets in sets.items():
        for i, labs in enumerate(label_sets):
            for lab in labs:
                path = _path_text(lab, sep)
                if "" in path.split(sep):
                    raise DataError(f"{what} of text {i}: {_show(lab)} has an empty path segment (label_sep "
                                    f"{sep!r} at its start or end, or twice in a row)")
                paths.append(path)
    return Taxonomy.from_paths(paths, sep)


def _show(label: str | _Path) -> str:
    return repr(list(label) if isinstance(label, _Path) else label)


def _resolver(taxonomy: Taxonomy, sep: str):
    """label -> node id, None where the taxonomy has no such node: a node id as it is, else a
    path of ids or display names from the root down (a ``sep``-path string or a :class:`_Path`)."""
    @functools.cache
    def resolve(label: str | _Path) -> str | None:
        if isinstance(label, str) and label in taxonomy and label != taxonomy.root:
            return label
        node, rest = _walk(taxonomy, _parts(label, sep))
        return None if rest else node
    return resolve


def _parts(label: str | _Path, sep: str) -> list[str]:
    return list(label) if isinstance(label, _Path) else label.split(sep)


def _walk(taxonomy: Taxonomy, parts: list[str]) -> tuple[str, list[str]]:
    """The deepest node reached from the root by ``parts`` (each a child's id or display name,
    one match), and the parts left over."""
    node = taxonomy.root
    for k, part in enumerate(parts):
        match = [c for c in taxonomy.children(node) if part in (c, taxonomy.name(c))]
        if len(match) != 1:
            return node, parts[k:]
        node = match[0]
    return node, []


def _node_sets(resolve, label_sets: list[list], what: str) -> list[list[str]]:
    """Node ids of each text's labels; a label the taxonomy lacks is one error saying what to do."""
    out = []
    for i, labs in enumerate(label_sets):
        ids = [resolve(lab) for lab in labs]
        if None in ids:
            raise DataError(f"{what} of text {i}: {_show(labs[ids.index(None)])} is not in the taxonomy "
                            "(neither a node id nor a path of ids or names from the root): add it to the "
                            "taxonomy given as taxonomy=, or give none to build it from the labels")
        out.append(ids)
    return out


def _scoring_taxonomy(taxonomy: Taxonomy, label_sets: list[list], sep: str) -> tuple[Taxonomy, list[list[str]]]:
    """The taxonomy to score gold labels against, and their node ids: ``taxonomy`` itself, or a
    copy with a node for each path part it lacks (under the deepest node it has), so that an
    unknown label counts as a miss (never predicted) instead of failing; a warning says so."""
    resolve = _resolver(taxonomy, sep)
    ids = [[resolve(lab) for lab in labs] for labs in label_sets]
    unknown = [lab for labs, got in zip(label_sets, ids) for lab, i in zip(labs, got) if i is None]
    if not unknown:
        return taxonomy, ids
    warnings.warn(f"{len(unknown)} gold label(s) unknown to the fitted model, e.g. {_show(unknown[0])}, "
                  "count as misses; fit with taxonomy= holding every label (e.g. in cross-validation) "
                  "to score them as the model's own", UserWarning, stacklevel=3)
    extended = taxonomy.copy()
    for labs, got in zip(label_sets, ids):
        got[:] = [i if i is not None else _add_path(extended, _parts(lab, sep), sep) for lab, i in zip(labs, got)]
    return extended, ids


def _add_path(taxonomy: Taxonomy, parts: list[str], sep: str) -> str:
    """Add the parts of a path ``taxonomy`` lacks below the deepest node it has; the last node's id."""
    node, rest = _walk(taxonomy, parts)
    g = taxonomy.graph
    for part in rest:
        child = part if node == taxonomy.root else f"{node}{sep}{part}"
        while child in g:                   # an id taken elsewhere in the taxonomy
            child += "?"
        g.add_node(child, name=part)
        g.add_edge(node, child, lead=[])
        node = child
    return node


def _write_dataset(folder: Path, taxonomy: Taxonomy, splits: dict[str, tuple[list[str], list[list[str]]]]) -> Path:
    """The splits as JSONL files with a dataset TOML card (``data/README.md``) and the taxonomy;
    returns the TOML's path."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "taxonomy.tax", taxonomy.dumps())
    for split, (texts, label_sets) in splits.items():
        atomic_write_text(folder / f"{split}.jsonl", "".join(
            json.dumps({"text": t, "labels": labs}, ensure_ascii=False) + "\n" for t, labs in zip(texts, label_sets)))
    card = folder / "data.toml"
    atomic_write_text(card, 'name = "data"\nformat = "jsonl"\ntaxonomy = "taxonomy.tax"\n\n[splits]\n'
                      + "".join(f'{s} = "{s}.jsonl"\n' for s in splits))
    return card
