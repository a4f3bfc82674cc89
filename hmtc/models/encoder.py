"""The shared text encoder: any transformers model, a learned mix of chosen hidden layers, and the
windows that let a text be longer than the encoder reads at once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel
from transformers.utils import logging as hf_logging

from ..encoders import EncoderError, resolve_encoder
from ..errors import ConfigError

try:
    from transformers.masking_utils import create_bidirectional_mask
except ImportError:               # transformers 4.x
    create_bidirectional_mask = None


class TextEncoder(nn.Module):
    """Wrap a transformers encoder and return token states mixed from chosen layers.

    Parameters
    ----------
    backbone : transformers.PreTrainedModel
        A BERT-like encoder (``hidden_states`` output, ``config.hidden_size``).
    layers : sequence of int
        Indices into ``hidden_states`` (0 = embeddings, -1 = last layer) mixed with learned
        softmax weights (a scalar mix); one index uses that layer as is.
    freeze_embeddings : bool
        Keep the word embeddings fixed: they hold most of a multilingual model's parameters
        and barely move in fine-tuning, and freezing them saves their optimizer cost.
    freeze_layers : int
        Keep the lowest N transformer layers fixed as well.
    """

    def __init__(self, backbone: nn.Module, layers: Sequence[int] = (-1,),
                 freeze_embeddings: bool = True, freeze_layers: int = 0):
        super().__init__()
        self.backbone = backbone
        self.layers = list(layers)
        depth = getattr(backbone.config, "num_hidden_layers", None)
        bad = [i for i in self.layers if depth is not None and not -(depth + 1) <= i <= depth]
        if bad:
            raise ConfigError(f"model.layers: {bad[0]} is not a hidden layer of this encoder "
                              f"(0..{depth}, or -1..-{depth + 1} from the top)")
        self.hidden_size = backbone.config.hidden_size
        self.mix = nn.Parameter(torch.zeros(len(self.layers))) if len(self.layers) > 1 else None
        self.freeze(freeze_embeddings, freeze_layers)

    def freeze(self, freeze_embeddings: bool, freeze_layers: int) -> None:
        """Keep the word embeddings (``freeze_embeddings``) and the lowest ``freeze_layers`` layers
        (the whole embeddings with them) fixed and let the rest of the backbone train: set from
        scratch, so a trained encoder carried into another run (``train.init_from``) takes that
        run's choice."""
        self.backbone.requires_grad_(True)
        self.freeze_layers = freeze_layers
        emb = getattr(self.backbone, "embeddings", None)
        if freeze_embeddings and emb is not None:
            emb.word_embeddings.weight.requires_grad_(False)
        for block in self.blocks()[:freeze_layers]:
            block.requires_grad_(False)
        if freeze_layers and emb is not None:
            emb.requires_grad_(False)

    def blocks(self) -> list[nn.Module]:
        """The transformer layers, lowest first (empty when the layout is unknown)."""
        enc = getattr(self.backbone, "encoder", None)
        return list(getattr(enc, "layer", [])) if enc is not None else []

    def forward(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor, *,
                inputs_embeds: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Token states (B, T, d).

        ``inputs_embeds`` (B, T, d), with ``input_ids=None``, feeds vectors in place of the word
        embeddings (e.g. text embeddings followed by label tokens); ``position_ids`` (B, T)
        replaces the backbone's default positions. Both are passed on only when given.
        """
        needs_all = self.layers != [-1]
        extra = {k: v for k, v in (("inputs_embeds", inputs_embeds), ("position_ids", position_ids))
                 if v is not None}
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                            output_hidden_states=needs_all, return_dict=True, **extra)
        if not needs_all:
            return out.last_hidden_state
        return self._mix([out.hidden_states[i] for i in self.layers])

    def _mix(self, states: list[torch.Tensor]) -> torch.Tensor:
        if self.mix is None:
            return states[0]
        w = torch.softmax(self.mix, 0)
        return sum(wi * s for wi, s in zip(w, states))

    # ---- frozen lower part / trainable upper part, for caching the frozen part's output ------
    def check_split(self) -> None:
        """Raise ConfigError unless :meth:`lower` / :meth:`upper` can stand in for ``forward``."""
        blocks = self.blocks()
        if not self.freeze_layers:
            raise ConfigError("caching the frozen encoder part needs model.freeze_layers > 0")
        if getattr(self.backbone, "embeddings", None) is None or not blocks:
            raise ConfigError("caching the frozen encoder part needs a BERT-like encoder "
                              "(backbone.embeddings and backbone.encoder.layer)")
        low = [i for i in self.layers if (i if i >= 0 else len(blocks) + 1 + i) < self.freeze_layers]
        if low:
            raise ConfigError(f"model.layers {low} lie inside the {self.freeze_layers} frozen layers; "
                              "a cached run can mix only layers above them")

    @torch.no_grad()
    def lower(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token states after the embeddings and the ``freeze_layers`` frozen layers (B, T, d),
        computed without dropout so they can be cached and reused every epoch."""
        was = self.backbone.training
        self.backbone.eval()
        try:
            h = self.backbone.embeddings(input_ids=input_ids)
            mask = _layer_mask(self.backbone, h, attention_mask)
            for block in self.blocks()[: self.freeze_layers]:
                h = _call_block(block, h, mask)
        finally:
            self.backbone.train(was)
        return h

    def upper(self, states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The trainable layers above ``freeze_layers`` on states from :meth:`lower` (B, T, d),
        mixed as ``forward`` mixes them."""
        blocks = self.blocks()
        n = len(blocks)
        mask = _layer_mask(self.backbone, states, attention_mask)
        hidden = {self.freeze_layers: states}
        for i, block in enumerate(blocks[self.freeze_layers:], self.freeze_layers + 1):
            states = _call_block(block, states, mask)
            hidden[i] = states
        return self._mix([hidden[i if i >= 0 else n + 1 + i] for i in self.layers])

    def param_groups(self, lr: float, layer_decay: float, weight_decay: float) -> list[dict]:
        """AdamW groups with layer-wise decay: layer ``l`` of ``L`` gets ``lr * decay**(L - l)``.

        Embeddings count as layer 0; biases and LayerNorm weights get no weight decay.
        """
        blocks = self.blocks()
        depth = {}
        for i, block in enumerate(blocks, 1):
            for p in block.parameters():
                depth[id(p)] = i
        n = len(blocks)
        groups: dict[tuple[int, bool], list] = {}
        for name, p in self.backbone.named_parameters():
            if not p.requires_grad:
                continue
            d = depth.get(id(p), 0 if "embeddings" in name else n)
            no_wd = p.ndim < 2
            groups.setdefault((d, no_wd), []).append(p)
        out = [{"params": ps, "lr": lr * layer_decay ** (n - d), "weight_decay": 0.0 if no_wd else weight_decay}
               for (d, no_wd), ps in sorted(groups.items())]
        if self.mix is not None:
            out.append({"params": [self.mix], "lr": lr, "weight_decay": 0.0})
        return out


def _layer_mask(backbone: nn.Module, states: torch.Tensor, attention_mask: torch.Tensor):
    """The attention mask in the form the backbone's layers take (as its own forward builds it)."""
    if create_bidirectional_mask is None:      # transformers 4.x: the additive extended mask
        return backbone.get_extended_attention_mask(attention_mask, states.shape[:2], dtype=states.dtype)
    return create_bidirectional_mask(config=backbone.config, inputs_embeds=states, attention_mask=attention_mask)


def _call_block(block: nn.Module, states: torch.Tensor, mask) -> torch.Tensor:
    out = block(states, mask)
    return out[0] if isinstance(out, tuple) else out     # transformers 4.x layers return tuples


def encoder_positions(bc) -> int | None:
    """Tokens an encoder reads at once, from its transformers config (None: it does not say)."""
    positions = getattr(bc, "max_position_embeddings", None)
    if positions is not None and bc.model_type in ("roberta", "xlm-roberta"):
        positions -= (getattr(bc, "pad_token_id", 0) or 0) + 1    # positions count from padding_idx + 1
    return positions


@dataclass
class WindowBatch:
    """The windows of a batch of B texts, R windows of W tokens in all.

    ``inputs`` (R, W) token ids or (R, W, d) states and ``mask`` (R, W) are what the encoder reads;
    ``source`` (B, T) is the flat window position (row · W + offset) whose state each text position
    takes, ``text_mask`` (B, T) the texts' own mask, ``spans`` (B, 2) the first flat position and
    the windowed length T_w of each text (see :class:`Windows`).
    """

    inputs: torch.Tensor
    mask: torch.Tensor
    source: torch.Tensor
    text_mask: torch.Tensor
    spans: torch.Tensor


class Windows:
    """Texts longer than one window, cut into windows, encoded apart and joined back.

    A text of L > W tokens ``[CLS] c_0 .. c_{n-1} [SEP]`` (n = L − 2), W the window length::

        C = W − 2                       content tokens per window
        s = stride                      tokens a window repeats from the one before, 0 ≤ s ≤ C/2
        K = 1 + ⌈(n − C) / (C − s)⌉     windows, k = 0 .. K − 1
        window k = [CLS] c_{k(C−s)} .. c_{min(k(C−s) + C, n) − 1} [SEP]

    The windows of every text of a batch are encoded together, one (R, W) batch, and each text's
    token states are gathered back onto its own L positions::

        h[0] = [CLS] of window 0,   h[L − 1] = [SEP] of window K − 1
        h[1 + j] = h_k[1 + j − k(C − s)],   k = clamp(⌊(j − ⌊s/2⌋) / (C − s)⌋, 0, K − 1)

    so an overlap gives its first ⌊s/2⌋ tokens to the earlier window and the rest to the later: a
    token keeps the window where it lies farther from the cut (BERT's "maximum context" rule), one
    state per position and nothing averaged. The inner windows' [CLS] and [SEP] occur nowhere in
    ``h``, so pooling never sees them (they are masked by construction), and the models above get
    (B, T, d) states and the texts' own mask as without windows.

    The windowed layout of a text, its windows end to end, all W long but the last, has
    T_w = (K − 1)·W + c_last + 2 rows (c_last: the last window's content) and gives its windows
    back from T_w alone (the cache of frozen layers, ``train.cache_frozen``, keeps it)::

        K = ⌈T_w / W⌉,   c_last = T_w − (K − 1)·W − 2,   L = (K − 1)(C − s) + c_last + 2

    Parameters
    ----------
    length : int
        W, special tokens included (``model.window_length``, else the encoder's positions).
    stride : int
        s (``model.window_stride``).
    pad_id : int
        Token id of the windows' padding.
    """

    def __init__(self, length: int, stride: int, pad_id: int):
        if not 0 <= stride <= (length - 2) // 2:
            raise ConfigError(f"model.window_stride {stride} exceeds half a window's {length - 2} content tokens")
        self.length, self.stride, self.pad_id = length, stride, pad_id
        self.step = length - 2 - stride

    def cut(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> WindowBatch:
        """The windows (R, W) of tokenised texts (B, T); ``text_mask`` is ``attention_mask``."""
        lengths = attention_mask.sum(1)
        text, k, content, source, spans = self._plan(lengths, attention_mask)
        o = torch.arange(self.length, device=input_ids.device)
        pos = k[:, None] * self.step + o                        # content offset o >= 1: text position
        pos = torch.where(o == 0, 0, pos)
        pos = torch.where(o == content[:, None] + 1, lengths[text][:, None] - 1, pos)
        mask = o <= content[:, None] + 1
        ids = input_ids[text[:, None], pos.clamp_max(input_ids.shape[1] - 1)].masked_fill(~mask, self.pad_id)
        return WindowBatch(ids, mask.to(attention_mask.dtype), source, attention_mask, spans)

    def cut_states(self, states: torch.Tensor, attention_mask: torch.Tensor) -> WindowBatch:
        """The windows (R, W, d) of states (B, T_w, d) in the windowed layout, ``attention_mask``
        over their rows; ``text_mask`` is built from the texts' lengths."""
        w, t_w = self.length, attention_mask.sum(1)
        # each window after the first adds its own [CLS] and [SEP] and s repeated tokens
        lengths = t_w - ((t_w + w - 1) // w - 1) * (w - self.step)
        positions = torch.arange(int(lengths.max()), device=states.device)
        text_mask = (positions < lengths[:, None]).to(attention_mask.dtype)
        text, k, _, source, spans = self._plan(lengths, text_mask)
        flat = k[:, None] * w + torch.arange(w, device=states.device)       # row in the windowed layout
        inputs = states[text[:, None], flat.clamp_max(states.shape[1] - 1)]
        return WindowBatch(inputs, (flat < t_w[text, None]).to(attention_mask.dtype), source, text_mask, spans)

    @staticmethod
    def whole(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> WindowBatch:
        """A batch (B, T) that fits one window as its own windows: row b is text b's one window,
        ``source`` each position itself, so :meth:`join` gives the states back as they are."""
        b, t = input_ids.shape
        source = torch.arange(b * t, device=input_ids.device).reshape(b, t)
        spans = torch.stack([source[:, 0], attention_mask.sum(1)], 1)
        return WindowBatch(input_ids, attention_mask, source, attention_mask, spans)

    def encode(self, batch: WindowBatch, fn) -> torch.Tensor:
        """The windows' states (R, W, d), ``fn(inputs, mask)`` run on the full windows together and
        on the short ones (at most half a window: mostly a text's last, often a few tokens) apart,
        each group cut to its own longest. Padded to W beside the full windows, such a window would
        cost as much as a full one: the ninth window of a 2,048-token text in windows of 256 holds
        14 tokens. Padding is masked, so only rounding differs from encoding all windows at once;
        the model and the frozen-layer cache both encode this way, so a cached text's states are
        the ones its uncached forward computes."""
        lengths = batch.mask.sum(1)
        short = lengths <= self.length // 2
        groups = [g for g in (torch.nonzero(~short).flatten(), torch.nonzero(short).flatten()) if len(g)]
        parts = []
        for rows in groups:
            width = int(lengths[rows].max())
            h = fn(batch.inputs[rows, :width], batch.mask[rows, :width])
            parts.append(F.pad(h, (0, 0, 0, batch.mask.shape[1] - width)))
        return torch.cat(parts)[torch.argsort(torch.cat(groups))]

    def join(self, states: torch.Tensor, batch: WindowBatch) -> torch.Tensor:
        """Token states (B, T, d) of the texts from the windows' states (R, W, d)."""
        return states.reshape(-1, states.shape[-1])[batch.source]

    def end_to_end(self, states: torch.Tensor, batch: WindowBatch) -> list[torch.Tensor]:
        """Each text's windows' states (T_w, d) in the windowed layout, from the windows' states (R, W, d)."""
        flat = states.reshape(-1, states.shape[-1])
        return [flat[a: a + n] for a, n in batch.spans.tolist()]

    def _plan(self, lengths: torch.Tensor, text_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Text, index k and content tokens of every window row (R,); ``source`` and ``spans``."""
        w, c, step, dev = self.length, self.length - 2, self.step, lengths.device
        n = lengths - 2
        count = 1 + ((n - c).clamp_min(0) + step - 1) // step          # K per text
        first = count.cumsum(0) - count                                  # its first window row
        text = torch.repeat_interleave(torch.arange(len(lengths), device=dev), count)
        k = torch.arange(len(text), device=dev) - first[text]
        content = (n[text] - k * step).clamp_max(c)
        last = n - (count - 1) * step                                    # the last window's content
        j = torch.arange(text_mask.shape[1], device=dev) - 1             # content index of a position
        kj = torch.minimum(((j - self.stride // 2).clamp_min(0) // step)[None, :], count[:, None] - 1)
        start = first[:, None] * w
        source = start + kj * w + 1 + j - kj * step
        source = torch.where(j == -1, start, source)
        source = torch.where(j == n[:, None], start + (count[:, None] - 1) * w + last[:, None] + 1, source)
        source = torch.where(text_mask.bool(), source, start)           # padding: any state, it is masked
        return text, k, content, source, torch.stack([first * w, (count - 1) * w + last + 2], 1)


def load_backbone(name_or_path: str, **options) -> nn.Module:
    """Load a transformers encoder by built-in name, local folder or hub id (offline-safe)."""
    hf_logging.set_verbosity_error()   # the unused pooler's load report is noise here
    path = resolve_encoder(name_or_path)
    try:  # the pooler is unused; not every architecture takes the flag
        backbone, info = AutoModel.from_pretrained(path, add_pooling_layer=False, output_loading_info=True,
                                                   **options)
    except TypeError:
        backbone, info = AutoModel.from_pretrained(path, output_loading_info=True, **options)
    check_loaded(backbone, info["missing_keys"], path)
    return backbone


def check_loaded(backbone: nn.Module, missing, path: str) -> None:
    """Refuse an encoder whose weights file lacks some of its parameters: transformers would start
    them from random values (a folder holding another model's weights trains from noise)."""
    params = {name for name, _ in backbone.named_parameters()}
    lacking = sorted(k for k in missing if k in params)
    if lacking:
        raise EncoderError(f"the encoder's weights file lacks {len(lacking)} of its {len(params)} weights "
                           f"({', '.join(lacking[:2])}, ...): not this encoder's weights", path=path)
