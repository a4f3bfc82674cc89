"""The model protocol: what every model is to training, inference, checkpoints and export.

A model, whatever it computes, offers

    create(config, text, index)   an untrained model from its own ``[model]`` table
                                  (:class:`~hmtc.config.ModelConfig`, its ``options`` read as the
                                  model's ``config_class``), how it reads texts
                                  (:class:`~hmtc.config.TextSpec`) and the compiled taxonomy
    save(folder)                  its own files, into a checkpoint folder being written
    load(folder, config, text, index)   the model a checkpoint folder holds
    scores(texts, batch_size, bf16, progress)   (S, N) float32 scores in the index's column order,
                                  0 the decision boundary; None settings: the model's own defaults
    one_pass                      True when ``hmtc train`` fits it with one ``fit(texts, labels,
                                  seed)`` call instead of the epoch loop (TF-IDF)
    path_scores(options)          True when its scores are path logits, logit p(c) with
                                  p(c) = P(c | parent) · p(parent) (local, conditional MSML)
    needs_examples                False when it scores with no training text at all (zeroshot,
                                  from the taxonomy's names: ``data.shots = 0``)
    node_rows()                   the tensors that hold one slice per node, and name_rows() the
                                  rows a node starts from its name: what :mod:`hmtc.migrate`
                                  carries onto an edited taxonomy (models without them cannot)

Checkpoint folders (:mod:`hmtc.checkpoint`) add the taxonomy, label index, config and decoding;
models are found by name in the registry ``MODELS`` and nowhere else.

:class:`EncoderModel` implements the protocol for the neural models: a transformers encoder
(:class:`~hmtc.models.encoder.TextEncoder`) feeding ``forward_states``, its tokenizer kept
beside it, weights in ``model.safetensors``, the backbone's config in ``encoder/`` (rebuilt
without a download) and the tokenizer in ``tokenizer/``. With ``model.windows`` a text longer than
the encoder reads at once is cut into windows and joined again before ``forward_states``
(:class:`~hmtc.models.encoder.Windows`).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import ClassVar

import numpy as np
import safetensors.torch
import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer

try:            # skips the random initialisation of a model built to be loaded (seconds on a CPU)
    from transformers.initialization import no_init_weights
except ImportError:                     # transformers < 5
    from transformers.modeling_utils import no_init_weights

from .batches import iterate, iterate_states
from ..batching import length_batches, tokenize
from ..config import ModelConfig, RunConfig, TextSpec, check_fields
from .dropout import use_fast_dropout
from .encoder import TextEncoder, Windows, encoder_positions, load_backbone
from ..encoders import resolve_encoder
from ..errors import ConfigError, HmtcError
from .label_init import init_from_label_names, name_directions
from ..registry import Registry
from ..taxonomy import TaxonomyIndex

MODELS: Registry = Registry("model")


def make_config(model_name: str, options: dict):
    """Build the named model's config dataclass from a dict, rejecting unknown keys."""
    cls = MODELS.get(model_name).config_class
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"unknown option(s) for model {model_name!r}: {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(known))}")
    check_fields(cls, options, "model.options")
    return cls(**options)


@dataclass(frozen=True)
class NodeRows:
    """A tensor of a model that holds one slice per node: the slices of ``param`` along ``axis``
    belong, in order, to the index columns ``nodes``. Slices of one ``family`` mean the same
    wherever they lie (every level's classifier rows are one family), so a node whose level
    changes takes its slice from one tensor to another."""

    family: str
    param: str
    axis: int
    nodes: np.ndarray


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on ``device`` when ``enabled``."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


class Model(ABC):
    """The protocol (see the module docstring)."""

    one_pass: ClassVar[bool] = False
    needs_examples: ClassVar[bool] = True
    config_class: ClassVar[type]

    @classmethod
    def path_scores(cls, options: dict) -> bool:
        """Whether a model of these ``model.options`` scores path logits (:mod:`hmtc.models.paths`)
        rather than one logit per node trained on its own."""
        return False

    @classmethod
    @abstractmethod
    def create(cls, config: ModelConfig, text: TextSpec, index: TaxonomyIndex) -> "Model":
        """An untrained model of ``config`` reading texts as ``text`` over the compiled taxonomy ``index``."""

    @abstractmethod
    def save(self, folder: Path) -> None:
        """Write the model's own files into ``folder`` (a checkpoint folder being built)."""

    @classmethod
    @abstractmethod
    def load(cls, folder: Path, config: ModelConfig, text: TextSpec, index: TaxonomyIndex) -> "Model":
        """The model saved in ``folder`` by :meth:`save`, ready to score."""

    @abstractmethod
    def scores(self, texts: Sequence[str], batch_size: int | None = None, bf16: bool | None = None,
               progress=None) -> np.ndarray:
        """Scores (len(texts), N), float32, in the label index's column order."""

    def node_rows(self) -> list[NodeRows]:
        """The tensors that hold one slice per node (:class:`NodeRows`); a model that cannot follow
        a taxonomy edit raises."""
        raise HmtcError(f"a {type(self).__name__} cannot follow taxonomy edits (hmtc migrate); train it again "
                        "on the new taxonomy")

    def name_rows(self, index: TaxonomyIndex) -> dict:
        """Unit slices, by parameter name, that the nodes of ``index`` (the model's own) start from
        their names; parameters left out start a new node at zero (a bias: the mean of the carried)."""
        return {}

    def fit(self, texts: Sequence[str], labels: np.ndarray, seed: int = 0) -> "Model":
        """One-pass models only: fit on ``texts`` and their indicator matrix ``labels`` (S, N)."""
        raise NotImplementedError(f"{type(self).__name__} trains in epochs, not in one fit")


def create_model(config: RunConfig, index: TaxonomyIndex) -> Model:
    """The run's model (``config.model.name`` in ``MODELS``), untrained."""
    return MODELS.get(config.model.name).create(config.model, TextSpec.of(config), index)


def load_model(folder: Path, config: RunConfig, index: TaxonomyIndex) -> Model:
    """The model of the run ``config`` saved in the checkpoint ``folder``."""
    return MODELS.get(config.model.name).load(folder, config.model, TextSpec.of(config), index)


def check_fits(backbone: nn.Module, m: ModelConfig, max_length: int) -> None:
    """A model's config and text length against the loaded encoder: texts fit its positions (or
    windows, which fit them), frozen layers exist."""
    bc = backbone.config
    if not m.windows and (m.window_length or m.window_stride):
        raise ConfigError("model.window_length and model.window_stride apply only with model.windows = true")
    positions = encoder_positions(bc)
    if positions is not None and not m.windows and max_length > positions:
        raise ConfigError(f"data.max_length {max_length} exceeds the encoder's {positions} positions; "
                          "model.windows = true cuts longer texts into windows")
    if positions is not None and m.windows and m.window_length > positions:
        raise ConfigError(f"model.window_length {m.window_length} exceeds the encoder's {positions} positions")
    if positions is None and m.windows and not m.window_length:
        raise ConfigError("model.windows: this encoder does not state its positions; set model.window_length")
    layers = getattr(bc, "num_hidden_layers", None)
    if layers is not None and m.freeze_layers > layers:
        raise ConfigError(f"model.freeze_layers {m.freeze_layers} exceeds the encoder's {layers} layers")


def text_windows(encoder_config, tokenizer, m: ModelConfig, max_length: int) -> Windows | None:
    """The windows of a model's texts (``model.windows``), or None when every text fits one window;
    ``encoder_config``: the encoder's transformers config (its positions)."""
    length = m.window_length or encoder_positions(encoder_config)
    if not m.windows or max_length <= length:
        return None
    if tokenizer.num_special_tokens_to_add() != 2:
        raise ConfigError("model.windows needs a tokenizer that adds one special token before a text and one after")
    return Windows(length, m.window_stride, tokenizer.pad_token_id or 0)


@dataclass
class ModelOutput:
    """``logits`` (B, N) in the compiled taxonomy's column order; ``loss`` only when labels are passed."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None


class EncoderModel(nn.Module, Model):
    """Base of the neural models: ``self.encoder`` (TextEncoder) feeds ``forward_states``.

    ``tokenizer`` and ``windows`` come from the model's config, ``max_length`` and the scoring
    defaults ``eval_batch_size`` and ``bf16`` from its :class:`~hmtc.config.TextSpec`, in
    :meth:`create` and :meth:`load` (:meth:`set_text` changes them).
    """

    tokenizer = None
    model_config: ModelConfig | None = None     # the [model] table it was built from
    max_length = 512
    windows: Windows | None = None      # texts longer than the encoder reads at once (model.windows)
    eval_batch_size = 128
    bf16 = False
    supports_cache = True      # False where the input itself changes (label tokens)
    text_prefix = ""           # read before every text (e5's "query: " for the zero-shot models)
    frozen_store = False       # the run keeps its frozen part's states on disk (train.frozen_store)

    # ---- the protocol -------------------------------------------------------------------
    @classmethod
    def create(cls, config: ModelConfig, text: TextSpec, index: TaxonomyIndex) -> "EncoderModel":
        """Backbone (built-in name, local folder or hub id), tokenizer, encoder wrapper, this model;
        fast dropout and label-name initialisation when configured."""
        backbone = load_backbone(config.encoder, **config.encoder_options)
        check_fits(backbone, config, text.max_length)
        encoder = TextEncoder(backbone, config.layers, config.freeze_embeddings, config.freeze_layers)
        model = cls(encoder, index, make_config(config.name, config.options))
        model.tokenizer = AutoTokenizer.from_pretrained(resolve_encoder(config.encoder))
        model.model_config = config
        model.set_text(text)
        if getattr(model.config, "label_init", ""):
            init_from_label_names(model, model.tokenizer, index, model.config.label_init)
        if config.fast_dropout:
            use_fast_dropout(model)
        return model

    def save(self, folder: Path) -> None:
        safetensors.torch.save_model(self, str(folder / "model.safetensors"))
        self.encoder.backbone.config.save_pretrained(folder / "encoder")
        self.tokenizer.save_pretrained(folder / "tokenizer")

    @classmethod
    def load(cls, folder: Path, config: ModelConfig, text: TextSpec, index: TaxonomyIndex) -> "EncoderModel":
        m = config
        enc_cfg = AutoConfig.from_pretrained(folder / "encoder")
        with no_init_weights():            # every weight is read from model.safetensors just below
            try:
                backbone = AutoModel.from_config(enc_cfg, add_pooling_layer=False)
            except TypeError:
                backbone = AutoModel.from_config(enc_cfg)
        encoder = TextEncoder(backbone, m.layers, m.freeze_embeddings, m.freeze_layers)
        model = cls(encoder, index, make_config(m.name, m.options))
        weights = folder / "model.safetensors"
        try:
            missing, unexpected = safetensors.torch.load_model(model, str(weights), strict=False)
        except (safetensors.SafetensorError, OSError, RuntimeError) as e:
            raise HmtcError(f"not readable weights: {' '.join(str(e).split())}", weights) from None
        if missing or unexpected:
            raise HmtcError(f"weights do not fit the model: missing {sorted(missing)[:3]}, "
                            f"unexpected {sorted(unexpected)[:3]}",
                            weights)
        bad = next((k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()),
                   None)
        if bad is not None:
            raise HmtcError(f"weights hold NaN or inf ({bad})", weights)
        if not (folder / "tokenizer").is_dir():     # else transformers reads the path as a hub id
            raise HmtcError("missing: the checkpoint is incomplete", folder / "tokenizer")
        model.tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
        model.model_config = config
        model.set_text(text)
        return model.eval()

    def set_text(self, text: TextSpec) -> None:
        """Read and score texts as ``text`` says: the tokenisation length (and with it the windows
        of ``model.windows``), the scoring defaults and whether the frozen part's states are stored
        (:func:`hmtc.inference.score_texts` reads them); a trained model carried into another run
        (``train.init_from``, :mod:`hmtc.migrate`) takes that run's."""
        self.max_length = text.max_length
        self.windows = text_windows(self.encoder.backbone.config, self.tokenizer, self.model_config, text.max_length)
        self.eval_batch_size, self.bf16 = text.eval_batch_size, text.bf16
        self.frozen_store = bool(self.supports_cache and text.frozen_store)

    def scores(self, texts: Sequence[str], batch_size: int | None = None, bf16: bool | None = None,
               progress=None) -> np.ndarray:
        ids = tokenize(self.tokenizer, [self.text_prefix + t for t in texts], self.max_length)
        return self.score_ids(ids, batch_size, bf16, progress=progress)

    @torch.inference_mode()
    def score_ids(self, token_ids: list[list[int]], batch_size: int | None = None, bf16: bool | None = None,
                  device: torch.device | None = None, progress=None) -> np.ndarray:
        """Logits (S, N) for tokenised texts, scored longest first, returned in input order."""
        batch_size = batch_size or self.eval_batch_size
        bf16 = self.bf16 if bf16 is None else bf16
        device = device or next(self.parameters()).device
        pad_id = getattr(self.tokenizer, "pad_token_id", None) or 0
        was_training = self.training
        self.eval()
        out = None
        batches = length_batches([len(t) for t in token_ids], batch_size, shuffle=False)
        task = progress.add_task("predict", total=len(token_ids), info="") if progress else None
        for b, ids, mask, _ in iterate(token_ids, batches, pad_id):
            with autocast(device, bf16):
                logits = self(ids.to(device), mask.to(device)).logits
            if out is None:
                out = np.zeros((len(token_ids), logits.shape[1]), dtype=np.float32)
            out[b] = logits.float().cpu().numpy()
            if progress:
                progress.advance(task, len(b))
        if progress and task is not None:
            progress.remove_task(task)
        self.train(was_training)
        return out if out is not None else np.zeros((0, 0), dtype=np.float32)

    @torch.inference_mode()
    def score_states(self, states: list[torch.Tensor], batch_size: int | None = None, bf16: bool | None = None,
                     device: torch.device | None = None) -> np.ndarray:
        """Logits (S, N) from the frozen part's states of each text (:func:`hmtc.inference.cache_lower_states`),
        in the order given, scored in batches of ``batch_size`` as they come (:meth:`score_ids` sorts by
        length first; hand the states in that order and the batches are the same)."""
        batch_size = batch_size or self.eval_batch_size
        bf16 = self.bf16 if bf16 is None else bf16
        device = device or next(self.parameters()).device
        was_training = self.training
        self.eval()
        out = None
        batches = [np.arange(i, min(i + batch_size, len(states))) for i in range(0, len(states), batch_size)]
        for b, x, mask, _ in iterate_states(states, batches):
            with autocast(device, bf16):
                logits = self(None, mask.to(device), lower_states=x.to(device)).logits
            if out is None:
                out = np.zeros((len(states), logits.shape[1]), dtype=np.float32)
            out[b] = logits.float().cpu().numpy()
        self.train(was_training)
        return out if out is not None else np.zeros((0, 0), dtype=np.float32)

    def name_rows(self, index: TaxonomyIndex) -> dict:
        """Each classifier's rows from the nodes' path names as the model reads them now
        (:func:`~hmtc.models.label_init.name_directions`), for models with ``label_features``."""
        if not hasattr(self, "label_features"):
            return {}
        return name_directions(self, self.tokenizer, index, "path")

    # ---- the network --------------------------------------------------------------------
    def head_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters outside the encoder (they get the head learning rate)."""
        enc = {id(p) for p in self.encoder.parameters()}
        return [p for p in self.parameters() if id(p) not in enc and p.requires_grad]

    def forward(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor,
                labels: torch.Tensor | None = None, *,
                lower_states: torch.Tensor | None = None) -> ModelOutput:
        """``lower_states`` (cached :meth:`TextEncoder.lower` output) replaces ``input_ids``."""
        return self.forward_states(*self.encode(input_ids, attention_mask, lower_states), labels)

    def encode(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor,
               lower_states: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states (B, T, d) of the texts and their mask (B, T).

        ``lower_states`` (B, T, d), the frozen layers' cached output with ``attention_mask`` over
        its rows, replaces ``input_ids``. With windows, a batch wider than one window is cut into
        windows, encoded and joined (:class:`~hmtc.models.encoder.Windows`); cached states are then
        in the windowed layout, and the mask returned is the texts' own. A batch that fits one
        window takes the plain path, so a short text scores exactly as without windows.
        """
        x = input_ids if lower_states is None else lower_states
        if self.windows is None or x.shape[1] <= self.windows.length:
            return self._encode(input_ids, attention_mask, lower_states), attention_mask
        if lower_states is None:
            cut = self.windows.cut(input_ids, attention_mask)
            states = self.windows.encode(cut, self._encode)
        else:
            cut = self.windows.cut_states(lower_states, attention_mask)
            states = self.windows.encode(cut, lambda x, m: self._encode(None, m, x))
        return self.windows.join(states, cut), cut.text_mask

    def _encode(self, input_ids, attention_mask, lower_states=None) -> torch.Tensor:
        if lower_states is not None:
            return self.encoder.upper(lower_states, attention_mask)
        return self.encoder(input_ids, attention_mask)
