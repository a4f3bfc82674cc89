"""Classifier rows initialised from the labels' own names (``model.options.label_init``).

Each node ``i`` has a text ``x_i``: its display name (``"name"``) or the display names along its
path from the root (``"path"``, e.g. ``"灾害/意外 / 坍/垮塌"``). The untrained model reads ``x_i`` as
it reads any text, and the features ``f_i`` that node ``i``'s classifier row sees for it become
that row, centred over the classifier's nodes and scaled to the rows' mean default norm ``s``::

    w_i = s · (f_i - mean_j f_j) / ||f_i - mean_j f_j||,    b_i = 0

so at the start a text scores highest on the labels whose names it resembles through the
encoder (and, for MSML, the same random towers and gates that the text passes), not at random.

A node that has a few labelled texts ``E_i`` can start from them instead (weight imprinting, Qi,
Brown & Lowe 2018, used by :mod:`hmtc.migrate` for nodes a taxonomy edit adds): with ``f(x)`` the
features its classifier sees for text ``x`` and ``E`` every example text given,

    a_i = (m_i - m) / ||m_i - m||,    m_i = mean_{x ∈ E_i} f(x),    m = mean_{x ∈ E} f(x)
"""

from __future__ import annotations

import torch

import numpy as np

from ..errors import ConfigError
from ..taxonomy import TaxonomyIndex

MODES = ("", "name", "path")


def label_texts(index: TaxonomyIndex, mode: str) -> list[str]:
    """One text per node: its display name, or the names from level 1 down to it (first parents)."""
    if mode not in MODES[1:]:
        raise ConfigError(f"unknown label_init {mode!r}; known: name, path")
    if mode == "name":
        return list(index.names)
    texts = []
    for i in range(index.n_nodes):
        chain, node = [], i
        while node >= 0:
            chain.append(index.names[node])
            node = int(index.parent[node])
        texts.append(" / ".join(reversed(chain)))
    return texts


@torch.no_grad()
def init_from_label_names(model: torch.nn.Module, tokenizer, index: TaxonomyIndex, mode: str,
                          max_length: int = 64) -> None:
    """Set the rows of every classifier of ``model`` (see the module docstring); the model must
    define ``label_features(input_ids, attention_mask) -> [(linear, node features), ...]``."""
    if not hasattr(model, "label_features"):
        raise ConfigError(f"label_init is not supported by the {type(model).__name__}")
    enc = _encode(tokenizer, index, mode, max_length)
    n = len(_features(model, enc))
    for k in range(n):      # in order: a lower level's features read the rows set above it (gates)
        linear, feats = _features(model, enc)[k]
        scale = linear.weight.norm(dim=1).mean()
        linear.weight.copy_(_directions(feats) * scale)
        linear.bias.zero_()


@torch.no_grad()
def name_directions(model: torch.nn.Module, tokenizer, index: TaxonomyIndex, mode: str = "path",
                    max_length: int = 64) -> dict[str, torch.Tensor]:
    """The unit direction ``(f_i - mean_j f_j) / ||f_i - mean_j f_j||`` of every classifier row of
    ``model`` as it reads the nodes' texts now, by the weight's parameter name (what
    :mod:`hmtc.migrate` gives a new node); one pass, so every level reads the rows it has."""
    names = {id(m): n for n, m in model.named_modules()}
    return {f"{names[id(linear)]}.weight": _directions(feats)
            for linear, feats in _features(model, _encode(tokenizer, index, mode, max_length))}


def _encode(tokenizer, index: TaxonomyIndex, mode: str, max_length: int) -> dict:
    return tokenizer(label_texts(index, mode), padding=True, truncation=True, max_length=max_length,
                     return_tensors="pt")


def _features(model: torch.nn.Module, enc: dict) -> list:
    """``model.label_features`` of the encoded texts, read with dropout off."""
    was_training = model.training
    model.eval()
    try:
        return model.label_features(enc["input_ids"], enc["attention_mask"])
    finally:
        model.train(was_training)


def _directions(feats: torch.Tensor) -> torch.Tensor:
    rows = feats.float() - feats.float().mean(0, keepdim=True)
    return rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-6)


@torch.no_grad()
def example_directions(model: torch.nn.Module, texts: list[str], y: np.ndarray, nodes: set[int],
                       batch_size: int = 32) -> dict[str, dict[int, torch.Tensor]]:
    """``{weight name: {row: a_i}}`` for the rows of ``model.node_rows()`` whose node is in
    ``nodes`` and carries some of ``texts`` (``y``: (S, N) bool, closed labels): the imprinted
    directions of the module docstring, the features read through ``model.text_features`` with
    dropout off, in batches of ``batch_size``."""
    names = {id(m): n for n, m in model.named_modules()}
    was_training = model.training
    model.eval()
    try:
        parts = []
        for i in range(0, len(texts), batch_size):
            enc = model.tokenizer([model.text_prefix + t for t in texts[i:i + batch_size]], padding=True,
                                  truncation=True, max_length=model.max_length, return_tensors="pt")
            parts.append(model.text_features(enc["input_ids"], enc["attention_mask"]))
    finally:
        model.train(was_training)
    rows = {r.param: r.nodes for r in model.node_rows()}
    y = torch.as_tensor(np.asarray(y, dtype=bool))
    out = {}
    for k, (linear, _) in enumerate(parts[0] if parts else []):
        feats = torch.cat([p[k][1] for p in parts]).float()
        centre = feats.mean(0)
        name = f"{names[id(linear)]}.weight"
        dirs = {}
        for row, col in enumerate(rows.get(name, [])):
            have = y[:, int(col)]
            if int(col) in nodes and have.any():
                m = feats[have].mean(0) - centre
                dirs[row] = m / m.norm().clamp_min(1e-6)
        out[name] = dirs
    return out
