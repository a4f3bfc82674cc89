"""Carry a trained checkpoint onto an edited taxonomy (``hmtc migrate``).

A model states which of its tensors hold one slice per node (:meth:`~hmtc.models.base.Model.node_rows`:
classifier rows and biases, label-feedback columns, prototypes); everything else (encoder,
towers, gates) is carried unchanged. For node ``j`` of the new taxonomy, with sources ``S_j``
(the old nodes whose slices go to it) and ``n_s`` the training texts of ``s``::

    r_j = Σ_{s ∈ S_j} n_s r_s / Σ_{s ∈ S_j} n_s        kept, renamed or moved (S_j = {j}, or the
                                                      old id --map names), merged (several)
    r_j = (r_p + σ a_j) / 2                          a split node's child: the old leaf p it now
                                                      sits under, and its own name
    r_j = σ a_j                                      a new node: its name, or its examples

A level the old taxonomy did not have takes the deepest old level's tower and gate where their
shapes agree (else they start untrained, and the migration says so). Here ``a_j`` is the model's row for node j's path name as the carried model reads it (unit length:
:meth:`~hmtc.models.base.Model.name_rows`) and ``σ`` the mean norm of the carried rows of the
same tensor; a new node given example texts starts from them instead (``a_j`` the centred mean
of the features its classifier sees for them: :func:`~hmtc.models.label_init.example_directions`,
centred over every example text given). A slice with no name row starts at 0 (a label-feedback column: the new node feeds
nothing down until trained), a bias at the mean of its tensor's carried biases. Equal weights
stand in for ``n_s`` when the checkpoint predates stored support or every source had none.

Decoding follows the same ids: a node's tuned threshold goes with its row (a merge takes the
weighted mean, a split child its parent's, a new node the run's global threshold); each level
keeps its calibration temperature (a new level takes the deepest old one's). A node whose slices
only moved scores exactly as before (its slices and everything under them are copied bit for bit).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .checkpoint import Checkpoint, read_support, save_checkpoint
from .config import TextSpec
from .errors import HmtcError
from .io import atomic_dir, atomic_write_text
from .models.label_init import example_directions
from .record import write_run_files
from .taxonomy import Taxonomy


@dataclass
class Migration:
    """The outcome of :func:`migrate`: the carried model and decoding, and what happened to each node.

    ``changes`` holds one line per changed node (``hmtc migrate`` prints them); ``sources`` maps
    each new node to its old nodes; ``kinds`` says how each new node started (kept, renamed,
    moved, merged, split, new)."""

    model: object
    taxonomy: Taxonomy
    decode: dict
    support: np.ndarray
    sources: dict[str, list[str]]
    kinds: dict[str, str]
    changes: list[str] = field(default_factory=list)


def parse_map(items: list[str]) -> dict[str, str]:
    """``--map OLD=NEW`` items as {old id: new id}."""
    out: dict[str, str] = {}
    for item in items:
        old, sep, new = item.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise HmtcError(f"--map {item!r}: write OLD=NEW (the old node id, then the new one)")
        if old.strip() in out:
            raise HmtcError(f"--map names {old.strip()!r} twice")
        out[old.strip()] = new.strip()
    return out


def _sources(old: Taxonomy, new: Taxonomy, mapping: dict[str, str]) -> dict[str, list[str]]:
    """Each new node's old nodes: itself when it kept its id, plus every old id ``mapping`` sends to it."""
    for o, n in mapping.items():
        if o not in old:
            raise HmtcError(f"--map {o}={n}: {o!r} is not a node of the run's taxonomy")
        if n not in new:
            raise HmtcError(f"--map {o}={n}: {n!r} is not a node of the new taxonomy")
        if o in new and o != n:
            raise HmtcError(f"--map {o}={n}: {o!r} is still in the new taxonomy; a node mapped away must be "
                            "removed from it (merged or renamed)")
    out = {j: ([j] if j in old and mapping.get(j, j) == j else []) for j in new.nodes}
    for o, n in mapping.items():
        if o != n:
            out[n].append(o)
    return out


@torch.no_grad()
def migrate(ckpt: Checkpoint, taxonomy: Taxonomy, mapping: dict[str, str] | None = None,
            examples: tuple[list[str], list[list[str]]] | None = None) -> Migration:
    """Carry the loaded checkpoint ``ckpt`` (torch engine) onto ``taxonomy`` (see the module
    docstring); ``mapping``: old id -> new id for renamed ids and merges; ``examples``: texts and
    their label sets (ids of ``taxonomy``), from which the new nodes they carry start."""
    old_model, old_tax, old_index = ckpt.model, ckpt.taxonomy, ckpt.index
    if old_model is None or not isinstance(old_model, torch.nn.Module):
        raise HmtcError("migrate needs the torch weights of a neural model", ckpt.path)
    old_rows = old_model.node_rows()             # raises for a model that cannot follow edits
    taxonomy.validate(taxonomy.path)
    sources = _sources(old_tax, taxonomy, mapping or {})
    index = taxonomy.compile()
    support_old = read_support(ckpt.path)
    weight = {i: float(support_old[k]) for k, i in enumerate(old_index.ids)} if support_old is not None else {}

    torch.manual_seed(0)                         # the slices nothing carries start the same every time
    model = type(old_model)(old_model.encoder, index, old_model.config)
    model.tokenizer, model.model_config = old_model.tokenizer, old_model.model_config
    model.set_text(TextSpec.of(ckpt.config))
    old_sd, new_sd = old_model.state_dict(), model.state_dict()
    new_rows = model.node_rows()
    node_params = {r.param for r in new_rows}
    fresh, deepest = [], _deepest(old_sd)
    for name, t in new_sd.items():
        if name in node_params:
            continue
        like = name if name in old_sd else _at_level(name, deepest)     # a new level: the deepest old one's
        if like in old_sd and old_sd[like].shape == t.shape:
            t.copy_(old_sd[like])
        else:
            fresh.append(name)
    old_slice = {}                               # (family, old id) -> its slice
    for r in old_rows:
        w = old_sd[r.param]
        for k, col in enumerate(r.nodes):
            old_slice[(r.family, old_index.ids[col])] = w.select(r.axis, k)

    kinds = {j: _kind(j, sources[j], old_tax, taxonomy, mapping or {}) for j in index.ids}
    split_parent = {j: _old_leaf_parent(j, sources, old_tax, taxonomy) for j in index.ids if not sources[j]}
    kinds.update({j: "split" for j, p in split_parent.items() if p is not None})

    def mix(family: str, olds: list[str]):
        got = [(old_slice[(family, s)], weight.get(s, 1.0)) for s in olds if (family, s) in old_slice]
        if not got:
            return None
        total = sum(w for _, w in got)
        if total <= 0:
            got, total = [(v, 1.0) for v, _ in got], float(len(got))
        if len(got) == 1:
            return got[0][0].clone()             # bit for bit: no arithmetic on a carried slice
        return sum(v.double() * w for v, w in got).div(total).to(got[0][0].dtype)

    todo = []                                    # (row spec, position, node id) that the names fill
    carried = {}                                 # param -> which of its slices came from old ones
    for r in new_rows:
        t, carried[r.param] = new_sd[r.param], np.zeros(len(r.nodes), dtype=bool)
        for k, col in enumerate(r.nodes):
            j = index.ids[col]
            v = mix(r.family, sources[j])
            t.select(r.axis, k).copy_(v if v is not None else torch.zeros_like(t.select(r.axis, k)))
            carried[r.param][k] = v is not None
            if v is None:
                todo.append((r, k, j))
    names = model.name_rows(index) if todo else {}
    imprinted = _imprinted(model, index, examples, {j for _, _, j in todo if kinds[j] == "new"}) if todo else {}
    for r, k, j in todo:
        t, here = new_sd[r.param], carried[r.param]
        slot = t.select(r.axis, k)
        if r.param in names:
            rows = t if r.axis == 0 else t.transpose(0, r.axis)
            norms = rows[torch.as_tensor(here)].float().norm(dim=-1) if here.any() else None
            scale = float(norms.mean()) if norms is not None and len(norms) else 1.0
            direction = imprinted.get(r.param, {}).get(k, names[r.param][k])
            value = scale * direction.to(t.dtype)
            parent = split_parent.get(j)
            if parent is not None and (r.family, parent) in old_slice:
                value = (old_slice[(r.family, parent)] + value) / 2
            slot.copy_(value)
        elif r.family.endswith("bias"):
            parent = split_parent.get(j)
            if parent is not None and (r.family, parent) in old_slice:
                slot.copy_(old_slice[(r.family, parent)])
            elif here.any():
                slot.copy_(t[torch.as_tensor(here)].mean())
    model.eval()

    support = np.array([sum(int(support_old[old_index.id_to_index[s]]) for s in sources[j])
                        if support_old is not None else 0 for j in index.ids], dtype=np.int64)
    decode = _migrate_decode(ckpt.decode, old_index, index, sources, split_parent, weight)
    changes = _changes(old_tax, taxonomy, sources, kinds, split_parent, mapping or {}, weight, support_old is not None,
                       _example_counts(index, examples, imprinted))
    if fresh:
        changes.append(f"! {len(fresh)} tensor(s) start untrained, nothing of their shape to carry "
                       f"({', '.join(fresh[:3])}{', ...' if len(fresh) > 3 else ''})")
    return Migration(model, taxonomy, decode, support, sources, kinds, changes)


def _deepest(state: dict) -> dict[str, int]:
    """The highest index of each per-level module list (``towers.2.…`` -> towers: 2)."""
    out: dict[str, int] = {}
    for name in state:
        head, _, rest = name.partition(".")
        number = rest.partition(".")[0]
        if number.isdigit():
            out[head] = max(out.get(head, 0), int(number))
    return out


def _at_level(name: str, deepest: dict[str, int]) -> str:
    head, _, rest = name.partition(".")
    number, _, tail = rest.partition(".")
    return f"{head}.{deepest[head]}.{tail}" if number.isdigit() and head in deepest else name


def _kind(j: str, src: list[str], old: Taxonomy, new: Taxonomy, mapping: dict[str, str]) -> str:
    if not src:
        return "new"
    if len(src) > 1:
        return "merged"
    if src[0] != j:
        return "renamed"
    if sorted({mapping.get(p, p) for p in old.parents(j)}) != sorted(new.parents(j)):
        return "moved"                           # a parent renamed or merged is no move
    return "kept"


def _old_leaf_parent(j: str, sources: dict[str, list[str]], old: Taxonomy, new: Taxonomy) -> str | None:
    """The old node a new node ``j`` was split from: its (first) parent carries exactly one old
    node, which had no children there."""
    parents = new.parents(j)
    if not parents:
        return None
    src = sources.get(parents[0], [])
    if len(src) == 1 and not old.children(src[0]):
        return src[0]
    return None


def _migrate_decode(decode: dict, old_index, index, sources, split_parent, weight) -> dict:
    out = dict(decode)
    thresholds = decode.get("per_label_thresholds")
    if thresholds is not None:
        col = old_index.id_to_index
        default = float(decode.get("threshold", 0.0))
        new = []
        for j in index.ids:
            src = sources[j] or ([split_parent[j]] if split_parent.get(j) else [])
            if not src:
                new.append(default)
                continue
            w = np.array([weight.get(s, 1.0) for s in src])
            w = w if w.sum() > 0 else np.ones(len(src))
            new.append(float(np.dot(w, [thresholds[col[s]] for s in src]) / w.sum()) if len(src) > 1
                       else float(thresholds[col[src[0]]]))
        out["per_label_thresholds"] = new
    temps = decode.get("temperatures")
    if temps is not None:
        out["temperatures"] = [temps[min(level, len(temps) - 1)] for level in range(index.depth)]
    return out


def _imprinted(model, index, examples, new: set[str]) -> dict:
    """The example directions of the ``new`` nodes that ``examples`` carry ({} without examples,
    or for a model that reads no features of texts)."""
    if not examples or not new or not hasattr(model, "text_features"):
        return {}
    texts, label_sets = examples
    return example_directions(model, list(texts), index.indicator(label_sets),
                              {index.id_to_index[j] for j in new})


def _example_counts(index, examples, imprinted: dict) -> dict[str, int]:
    """How many example texts each node that started from them had."""
    if not imprinted:
        return {}
    y = index.indicator(examples[1])
    return {index.ids[i]: int(y[:, i].sum()) for i in range(index.n_nodes) if y[:, i].any()}


def _changes(old: Taxonomy, new: Taxonomy, sources, kinds, split_parent, mapping, weight, has_support,
             examples: dict[str, int]) -> list[str]:
    lines = []
    for j in new.nodes:
        k, src = kinds[j], sources[j]
        where = ", ".join(new.parents(j)) or new.root
        if k == "new":
            lines.append(f"+ {j}  new under {where}: " + (f"from its {examples[j]} examples" if j in examples
                                                           else "from its name"))
        elif k == "split":
            lines.append(f"+ {j}  split from {split_parent[j]}: its row and the name")
        elif k == "merged":
            parts = ", ".join(f"{s} ({int(weight[s])} texts)" if has_support else s for s in src)
            lines.append(f"~ {j}  merged from {parts}" + ("" if has_support else " (equal weights: no support stored)"))
        elif k == "renamed":
            moved = sorted(mapping.get(p, p) for p in old.parents(src[0])) != sorted(new.parents(j))
            lines.append(f"~ {j}  renamed from {src[0]}" + (f", now under {where}" if moved else ""))
        elif k == "moved":
            lines.append(f"~ {j}  moved: under {', '.join(old.parents(j)) or old.root} -> {where} "
                         "(its new parent has not learnt its texts: fine-tune with --init)")
        if k in ("kept", "moved") and old.name(j) != new.name(j):
            lines.append(f"~ {j}  name {old.name(j)!r} -> {new.name(j)!r}")
    mapped = set(mapping)
    lines += [f"- {i}  removed" for i in old.nodes if i not in new and i not in mapped]
    return lines


def check_new_folder(out: str | Path) -> Path:
    """``out`` when nothing is there yet (a migrated run is written only into a new folder)."""
    out = Path(out)
    if out.exists() or out.is_symlink():
        raise HmtcError("exists; give a new folder for the migrated run", out)
    return out


def write_migrated(migration: Migration, ckpt: Checkpoint, out: str | Path) -> Path:
    """A run folder ``out`` holding the migrated checkpoint in ``best/`` (it predicts at once),
    the new taxonomy as ``taxonomy.tax`` (its config's ``data.taxonomy``, for ``hmtc eval`` and for
    ``train.init_from``), ``config.json`` and ``run.json`` (what it was migrated from). Written
    aside and renamed into place: ``out`` must not exist."""
    out = check_new_folder(out)
    config = ckpt.config.merged({"name": out.name, "data": {"taxonomy": str((out / "taxonomy.tax").resolve())}})
    decode = json.dumps(migration.decode, ensure_ascii=False, indent=1).encode("utf-8")
    with atomic_dir(out) as tmp:
        atomic_write_text(tmp / "taxonomy.tax", migration.taxonomy.dumps())
        save_checkpoint(tmp / "best", migration.model, migration.taxonomy, config,
                        extra_files={"decode.json": decode}, support=migration.support)
        write_run_files(tmp, config, migrated_from=str(ckpt.path.resolve()), changes=migration.changes)
    return out
