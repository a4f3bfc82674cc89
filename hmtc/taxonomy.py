"""The taxonomy: a networkx DiGraph under one root, its text format, edits and compiled index.

File format (``.tax``), one node per line, made to be edited by hand and to diff well::

    # comments and blank lines are kept where they stand
    ROOT
      灾害/意外
        灾害/意外-坍/垮塌 "坍/垮塌"
        灾害/意外-地震 "地震"
          > 地面剧烈震动，房屋倒塌，人员伤亡
      shared-child-example
        &灾害/意外-地震

* The first node line, at indent 0, is the root; it is never a label. A second line at
  indent 0 is an error ("second root").
* Two spaces of indent per level; a node's parent is the nearest line above it with one
  level less of indent.
* ``ID`` or ``ID "display name"``. Ids are unique, may hold spaces, ``/``, ``-`` and ``.``,
  but not ``"`` nor start with ``&`` or ``#``.
* ``&ID`` adds one more parent to a node defined elsewhere (this is how a DAG is written);
  a reference has no children and no name.
* ``> description`` on the line right after a node's definition, one level deeper, gives the
  node a one-line description (free text: quotes, ``&``, ``#`` and ``!exclusive`` are plain
  words there); zero-shot models read it beside the display name
  (:mod:`hmtc.models.zeroshot`). Every edit carries it with its node, as it does the display
  name; a reference takes none, and an id cannot start with ``>``.
* ``ID !exclusive`` or ``ID "display name" !exclusive`` (the mark last, after one or more
  spaces) says that the node's children are mutually exclusive: a text belongs to at most one
  of them. On the root's line it makes the level-1 nodes one such group. A reference takes no
  mark (mark the node where it is defined). A last word starting with ``!`` is read as a mark
  and only ``!exclusive`` is one (``!Exclusive``, ``!only``: errors), so no word of an id starts
  with ``!`` and no id ends glued to ``!exclusive``: one string stays unambiguous. An id holds
  no tab or other control character.

Exclusive sibling groups: the mark is the node attribute ``exclusive=True`` in the graph (absent
when unmarked), so every edit carries it with the node: ``rename`` keeps it on the renamed
node, ``remove --reparent`` leaves it on the parent that takes the children, and ``merge`` keeps
it on the target only when every one of the two nodes that brings children was marked (a node
without children claims nothing; the merged children are exclusive only if each side's were).
:meth:`Taxonomy.compile` turns the marks into index arrays (:class:`TaxonomyIndex`
``exclusive_parent`` and ``exclusive_children``); a marked node with fewer than two children
is no group (there is nothing to exclude). Training adds a softmax cross-entropy over each
group's children (:class:`hmtc.losses.ExclusiveLoss`) and decoding keeps at most one child per
group (:func:`hmtc.decode.keep_one_per_group`). A taxonomy without marks compiles to an index
with no groups and trains and decodes exactly as before.

Levels: the root has level 0 and every other node ``1 + max(level of its parents)``, the
length of the longest path from the root. In a tree this is the depth; in a DAG it puts
every node strictly below all its parents, so decoding can go level by level.

Saving writes the canonical form: a pre-order walk from the root in the stored child order,
a node's definition at its first occurrence and ``&`` references after. ``load`` then
``save`` is byte-identical for any file in canonical form (every file hmtc writes).
"""

from __future__ import annotations

import copy as _copy
import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import networkx as nx
import numpy as np
import scipy.sparse as sp

from .errors import TaxonomyError
from .io import atomic_write_text

DEFAULT_ROOT = "ROOT"
HEADER = ('# hmtc taxonomy: one node per line, two spaces of indent per level; '
          'ID or ID "display name"; &ID adds a second parent (DAG).')
EXCLUSIVE = "!exclusive"
_NODE_RE = re.compile(r'^(?P<ref>&)?(?P<id>[^"]*?)(?:\s+"(?P<name>[^"]*)")?(?:\s+(?P<mark>!\S*))?$')
# an id that would read back as a mark: a word of it starting with '!', or one glued to !exclusive
_MARK_IN_ID = re.compile(r"(?:^|\s)!\S*|!exclusive$", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")        # tabs and other control characters: no id holds one


@dataclass(frozen=True)
class TaxonomyIndex:
    """The taxonomy compiled into index arrays; the root is excluded.

    Nodes are ordered by level, then by pre-order position, so each level is a contiguous
    slice of columns. Decoding and metrics use these arrays and never walk the graph.

    Attributes
    ----------
    ids : tuple of str
        Node ids; position = column in indicator matrices.
    names : tuple of str
        Display names (the id where none is given).
    levels : ndarray of int64, shape (N,)
        1-based level (longest path from the root).
    parent_ptr, parent_idx : ndarray of int64
        CSR lists of parents: parents of node ``i`` are
        ``parent_idx[parent_ptr[i]:parent_ptr[i+1]]``; level-1 nodes have none.
    parents_padded : ndarray of int64, shape (N, max_parents)
        The same lists padded with -1.
    leaf_mask : ndarray of bool, shape (N,)
    ancestors : ndarray of bool, shape (N, N)
        ``ancestors[i, j]`` is True when ``j`` is a proper ancestor of ``i``.
    is_tree : bool
        Every node has exactly one parent.
    exclusive_parent : ndarray of int64, shape (G,)
        Column of each exclusive sibling group's parent, -1 for the root's group; the root's
        group first, then by parent column.
    exclusive_children : ndarray of int64, shape (G, max(1, max group size))
        Columns of each group's children, ascending, padded with -1. ``G = 0`` for a taxonomy
        without marks.
    descriptions : tuple of str
        Each node's one-line description (``""`` where it has none).
    """

    ids: tuple[str, ...]
    names: tuple[str, ...]
    levels: np.ndarray
    parent_ptr: np.ndarray
    parent_idx: np.ndarray
    parents_padded: np.ndarray
    leaf_mask: np.ndarray
    ancestors: np.ndarray
    is_tree: bool
    exclusive_parent: np.ndarray
    exclusive_children: np.ndarray
    descriptions: tuple[str, ...] = ()

    @property
    def n_nodes(self) -> int:
        return len(self.ids)

    @property
    def n_groups(self) -> int:
        """Number of exclusive sibling groups."""
        return len(self.exclusive_parent)

    @property
    def depth(self) -> int:
        return int(self.levels.max()) if len(self.levels) else 0

    @cached_property
    def id_to_index(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.ids)}

    @cached_property
    def level_slices(self) -> tuple[slice, ...]:
        """Column slice of each level, ``level_slices[0]`` being level 1."""
        bounds = np.searchsorted(self.levels, np.arange(1, self.depth + 2))
        return tuple(slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]))

    @cached_property
    def n_parents(self) -> np.ndarray:
        return np.diff(self.parent_ptr)

    @cached_property
    def parent(self) -> np.ndarray:
        """First parent of each node (-1 for level 1); the only parent in a tree."""
        out = np.full(self.n_nodes, -1, dtype=np.int64)
        has = self.n_parents > 0
        out[has] = self.parent_idx[self.parent_ptr[:-1][has]]
        return out

    @cached_property
    def ancestors_csr(self) -> sp.csr_array:
        """``ancestors`` as a sparse boolean matrix (a node has few ancestors)."""
        return sp.csr_array(self.ancestors)

    def closure(self, y):
        """Add every ancestor of each positive node: ``y | (y @ ancestors)``.

        Sparse work: cost grows with the positives, not with samples x nodes x nodes. A dense
        ``y`` gives a dense bool array; a scipy sparse ``y`` gives a canonical bool CSR array.
        """
        if sp.issparse(y):
            m = sp.csr_array(y).astype(bool)
            out = m + m @ self.ancestors_csr            # boolean algebra: + is OR
            out.sum_duplicates()
            return out
        out = np.array(y, dtype=bool)
        rows, cols = np.nonzero(out)
        up = self.ancestors_csr[cols]                   # one row of ancestors per positive
        r, c = up.nonzero()
        out[rows[r], c] = True
        return out

    def indicator(self, label_sets: Iterable[Iterable[str]], close: bool = True) -> np.ndarray:
        """Indicator matrix (samples x nodes) from lists of node ids, closed under ancestors."""
        label_sets = list(label_sets)
        rows, cols = [], []
        for r, labels in enumerate(label_sets):
            for lab in labels:
                rows.append(r)
                cols.append(self.id_to_index[lab])
        y = np.zeros((len(label_sets), self.n_nodes), dtype=bool)
        y[rows, cols] = True
        return self.closure(y) if close else y

    def labels_of(self, y: np.ndarray) -> list[list[str]]:
        """Node ids of each row of an indicator matrix, in column order."""
        rows, cols = np.nonzero(np.asarray(y))
        out: list[list[str]] = [[] for _ in range(len(y))]
        for r, c in zip(rows.tolist(), cols.tolist()):
            out[r].append(self.ids[c])
        return out


class Taxonomy:
    """A label hierarchy: a networkx DiGraph (edges parent -> child) under one root.

    The graph is the single source of truth; :meth:`compile` derives the index arrays.

    Parameters
    ----------
    graph : networkx.DiGraph
        Nodes may carry ``name`` (display name) and ``exclusive=True`` (the ``!exclusive`` mark:
        the node's children are mutually exclusive); ``graph.graph["root"]`` names the root.
    path : str or Path, optional
        The file it was read from, used in error messages and by :meth:`save`.
    """

    def __init__(self, graph: nx.DiGraph, path: str | Path | None = None):
        self.graph = graph
        self.path = None if path is None else Path(path)

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def new(cls, root: str = DEFAULT_ROOT, header: bool = True) -> "Taxonomy":
        g = nx.DiGraph(root=root, lead=[HEADER] if header else [], trailer=[])
        g.add_node(root)
        return cls(g)

    @classmethod
    def load(cls, path: str | Path, strict: bool = False) -> "Taxonomy":
        """Read and validate a ``.tax`` file (``strict``: see :meth:`parse`)."""
        path = Path(path)
        try:
            text = path.read_bytes().decode("utf-8")
        except FileNotFoundError:
            raise TaxonomyError("file not found", path) from None
        except UnicodeDecodeError as e:
            raise TaxonomyError(f"not UTF-8 (byte {e.start})", path) from None
        return cls.parse(text, path, strict)

    @classmethod
    def parse(cls, text: str, path: str | Path | None = None, strict: bool = False) -> "Taxonomy":
        """Parse the text format; raises :class:`TaxonomyError` naming file, line and node.

        ``strict`` (``hmtc taxonomy validate``) also refuses an ``!exclusive`` mark on a leaf:
        it claims nothing, so it is most likely meant for the line above. Loading for use or
        edits takes it, since ``hmtc taxonomy add NODE --exclusive`` marks a node before its
        children are added.
        """
        g = nx.DiGraph(root=None, lead=[], trailer=[])
        defined: dict[str, int] = {}          # id -> line of its definition
        refs: list[tuple[str, str, int, list[str]]] = []   # parent, child, line, lead
        stack: list[tuple[str, bool]] = []    # (id, is_ref) per depth
        pending: list[str] = []               # comment / blank lines before the next node
        order: list[tuple[str, str, list[str], int]] = []  # child edges in file order

        def err(msg: str, line: int, node: str | None = None) -> TaxonomyError:
            return TaxonomyError(msg, path, line, node)

        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        described: str | None = None          # the node defined on the line just above, if any
        for no, raw in enumerate(lines, 1):
            stripped = raw.strip()
            if stripped.startswith(">"):
                indent = len(raw) - len(raw.lstrip(" "))
                if described is None:
                    raise err("a description (> text) belongs right after its node's line (not after a "
                              "reference, a comment or another description)", no)
                if indent != 2 * (len(stack)):
                    raise err(f"a description is indented one level below its node {described!r} "
                              f"({2 * len(stack)} spaces)", no, described)
                text = stripped[1:].strip()
                if not text or raw != " " * indent + "> " + text:
                    raise err("a description reads '> text': one space after '>', no trailing spaces", no,
                              described)
                g.nodes[described]["description"] = text
                described = None
                continue
            described = None
            if not stripped or stripped.startswith("#"):
                pending.append(raw)
                continue
            if "\t" in raw[: len(raw) - len(raw.lstrip())]:
                raise err("tab in indentation; indent with two spaces per level", no)
            indent = len(raw) - len(raw.lstrip(" "))
            if indent % 2:
                raise err(f"indent of {indent} spaces is not a multiple of two", no)
            depth = indent // 2
            m = _NODE_RE.match(stripped)
            node = m.group("id").strip() if m else ""
            if not m or not node or node.startswith(("&", "#")):
                raise err(f"cannot read node line {stripped!r}; expected ID or ID \"name\"", no)
            _check_line(node, m.group("mark"), lambda msg: err(msg, no, node))
            is_ref, name, mark = bool(m.group("ref")), m.group("name"), bool(m.group("mark"))
            attrs = {**({"name": name} if name is not None else {}), **({"exclusive": True} if mark else {})}
            if depth == 0:
                if g.graph["root"] is not None:
                    raise err(f"second root {node!r}: root {g.graph['root']!r} is already "
                              f"defined on line {defined[g.graph['root']]}; indent it", no, node)
                if is_ref:
                    raise err("the root cannot be a reference", no, node)
                g.graph["root"], g.graph["lead"] = node, pending
                pending = []
                g.add_node(node, **attrs)
                defined[node] = no
                stack = [(node, False)]
                described = node
                continue
            if g.graph["root"] is None:
                raise err("the first node line must be the root, at indent 0", no, node)
            if depth > len(stack):
                raise err(f"indented {depth - len(stack) + 1} levels below the line above; "
                          "indent one level (two spaces) at a time", no, node)
            parent, parent_is_ref = stack[depth - 1]
            if parent_is_ref:
                raise err(f"a reference (&{parent}) cannot have children", no, node)
            del stack[depth:]
            stack.append((node, is_ref))
            if is_ref:
                if name is not None:
                    raise err("a reference (&ID) takes no display name", no, node)
                if mark:
                    raise err(f"a reference (&ID) takes no {EXCLUSIVE} mark; mark the node where it "
                              "is defined", no, node)
                if node == parent:
                    raise err(f"self-loop: {node!r} is listed as its own child", no, node)
                refs.append((parent, node, no, pending))
                order.append((parent, node, pending, no))
            else:
                if node in defined:
                    raise err(f"duplicate id {node!r}, first defined on line {defined[node]} "
                              "(use &ID to give a node a second parent)", no, node)
                defined[node] = no
                g.add_node(node, **attrs)
                order.append((parent, node, pending, no))
                described = node
            pending = []
        if g.graph["root"] is None:
            raise TaxonomyError("no root: the file has no node line", path, len(lines) or None)
        g.graph["trailer"] = pending
        for parent, child, no, _ in refs:
            if child not in defined:
                raise err(f"&{child} refers to an unknown node", no, child)
        edge_line: dict[tuple[str, str], int] = {}
        for parent, child, lead, no in order:
            if g.has_edge(parent, child):
                raise err(f"{child!r} is listed twice under {parent!r}", no, child)
            if child == g.graph["root"]:
                raise err("the root cannot have a parent", no, child)
            g.add_edge(parent, child, lead=lead)
            edge_line[(parent, child)] = no
        try:
            cycle = nx.find_cycle(g)
        except nx.NetworkXNoCycle:
            cycle = None
        if cycle:
            no = max(edge_line[e[:2]] for e in cycle)
            nodes = [e[0] for e in cycle] + [cycle[0][0]]
            raise err("cycle: " + " -> ".join(nodes), no, cycle[0][0])
        leaf = next((n for n in defined if g.nodes[n].get("exclusive") and not g.out_degree(n)), None) \
            if strict else None
        if leaf is not None:
            raise err(f"{EXCLUSIVE} on a leaf: the mark says a node's children exclude each other, and "
                      f"{leaf!r} has none (mark its parent?)", defined[leaf], leaf)
        return cls(g, path)

    # ---- writing ------------------------------------------------------------------------
    def dumps(self) -> str:
        """The canonical text form (see the module docstring)."""
        g, root = self.graph, self.root
        out = list(g.graph.get("lead", []))
        out.append(self._node_line(root, 0, False))
        out.extend(self._description_line(root, 0))
        seen = {root}
        stack = [(c, 1) for c in reversed(list(g.successors(root)))]
        parents = [root] * len(stack)
        while stack:
            node, depth = stack.pop()
            parent = parents.pop()
            out.extend(g.edges[parent, node].get("lead", []))
            ref = node in seen
            out.append(self._node_line(node, depth, ref))
            if ref:
                continue
            out.extend(self._description_line(node, depth))
            seen.add(node)
            kids = list(g.successors(node))
            stack.extend((c, depth + 1) for c in reversed(kids))
            parents.extend([node] * len(kids))
        out.extend(g.graph.get("trailer", []))
        return "\n".join(out) + "\n"

    def _node_line(self, node: str, depth: int, ref: bool) -> str:
        if ref:
            return "  " * depth + "&" + node
        name = self.graph.nodes[node].get("name")
        return ("  " * depth + node + (f' "{name}"' if name is not None else "")
                + (" " + EXCLUSIVE if self.is_exclusive(node) else ""))

    def _description_line(self, node: str, depth: int) -> list[str]:
        text = self.graph.nodes[node].get("description")
        return [] if text is None else ["  " * (depth + 1) + "> " + text]

    def save(self, path: str | Path | None = None) -> Path:
        """Validate, then write the canonical form atomically (write aside, then rename)."""
        path = Path(path) if path is not None else self.path
        if path is None:
            raise TaxonomyError("no file to save to")
        self.validate(path)
        atomic_write_text(path, self.dumps())
        self.path = path
        return path

    # ---- structure ----------------------------------------------------------------------
    @property
    def root(self) -> str:
        return self.graph.graph["root"]

    @property
    def nodes(self) -> list[str]:
        """Non-root node ids in pre-order."""
        return [n for n in self._preorder() if n != self.root]

    def _preorder(self) -> list[str]:
        seen, out, stack = set(), [], [self.root]
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            out.append(n)
            stack.extend(reversed(list(self.graph.successors(n))))
        return out

    def __contains__(self, node: str) -> bool:
        return node in self.graph

    def __len__(self) -> int:
        return self.graph.number_of_nodes() - 1

    def name(self, node: str) -> str:
        return self.graph.nodes[node].get("name") or node

    def description(self, node: str) -> str:
        """The node's one-line description (``""`` where it has none)."""
        return self.graph.nodes[node].get("description") or ""

    def parents(self, node: str) -> list[str]:
        return [p for p in self.graph.predecessors(node) if p != self.root]

    def children(self, node: str) -> list[str]:
        return list(self.graph.successors(node))

    def is_exclusive(self, node: str) -> bool:
        """Whether ``node`` (the root included) is marked: its children are mutually exclusive."""
        return bool(self.graph.nodes[node].get("exclusive"))

    def exclusive_groups(self) -> list[str]:
        """The marked nodes that head a group: those with at least two children, in graph order."""
        return [n for n in self.graph if self.is_exclusive(n) and self.graph.out_degree(n) > 1]

    def levels(self) -> dict[str, int]:
        """Level of each node: root 0, else 1 + max level of its parents."""
        lv = {self.root: 0}
        for n in nx.topological_sort(self.graph):
            if n != self.root:
                lv[n] = 1 + max(lv[p] for p in self.graph.predecessors(n))
        return lv

    @property
    def is_tree(self) -> bool:
        return all(self.graph.in_degree(n) == 1 for n in self.graph if n != self.root)

    def validate(self, path: str | Path | None = None) -> None:
        """Check the invariants that edits could break; raise :class:`TaxonomyError`."""
        g, path = self.graph, path or self.path
        for n in nx.nodes_with_selfloops(g):
            raise TaxonomyError(f"self-loop on {n!r}", path, item=n)
        try:
            cycle = nx.find_cycle(g)
            raise TaxonomyError("cycle: " + " -> ".join(e[0] for e in cycle) + f" -> {cycle[0][0]}",
                                path, item=cycle[0][0])
        except nx.NetworkXNoCycle:
            pass
        roots = [n for n in g if g.in_degree(n) == 0]
        extra = [n for n in roots if n != self.root]
        if extra:
            raise TaxonomyError(f"second root {extra[0]!r}: every node must sit under "
                                f"{self.root!r}", path, item=extra[0])
        if g.in_degree(self.root):
            raise TaxonomyError("the root cannot have a parent", path, item=self.root)
        for n in g:
            if '"' in n or n != n.strip() or not n or n.startswith(("&", "#", ">")) or "\n" in n:
                raise TaxonomyError(f"invalid id {n!r}: no quotes or newlines, no leading &, # or >, "
                                    "no surrounding spaces", path, item=n)
            if _MARK_IN_ID.search(n) or _CONTROL.search(n):
                raise TaxonomyError(f"invalid id {n!r}: it would read back as the {EXCLUSIVE} mark or "
                                    "another (no word of an id starts with '!'), or holds a tab or control "
                                    "character", path, item=n)
            name = g.nodes[n].get("name")
            if name is not None and ('"' in name or "\n" in name):
                raise TaxonomyError(f"invalid display name {name!r}", path, item=n)
            text = g.nodes[n].get("description")
            if text is not None and (not text or text != text.strip() or "\n" in text or "\r" in text):
                raise TaxonomyError(f"invalid description {text!r}: one line, not empty, no surrounding spaces",
                                    path, item=n)

    def compile(self) -> TaxonomyIndex:
        """Compile into :class:`TaxonomyIndex`, cached while the graph's nodes, display names,
        exclusive marks and edges (in order) stay as they are, however the graph was edited."""
        key = (tuple(self.graph.nodes(data="name")), tuple(self.graph.nodes(data="exclusive")),
               tuple(self.graph.nodes(data="description")), tuple(self.graph.edges))
        if getattr(self, "_compiled_key", None) == key:
            return self._compiled
        lv = self.levels()
        pre = {n: i for i, n in enumerate(self._preorder())}
        ids = sorted((n for n in self.graph if n != self.root), key=lambda n: (lv[n], pre[n]))
        pos = {n: i for i, n in enumerate(ids)}
        plist = [[pos[p] for p in self.parents(n)] for n in ids]
        ptr = np.zeros(len(ids) + 1, dtype=np.int64)
        ptr[1:] = np.cumsum([len(p) for p in plist])
        pidx = np.array([p for ps in plist for p in ps], dtype=np.int64)
        width = max((len(p) for p in plist), default=0)
        padded = np.full((len(ids), max(width, 1)), -1, dtype=np.int64)
        for i, ps in enumerate(plist):
            padded[i, : len(ps)] = ps
        anc = np.zeros((len(ids), len(ids)), dtype=bool)
        for i, ps in enumerate(plist):       # ids are level-sorted: parents come first
            for p in ps:
                anc[i, p] = True
                anc[i] |= anc[p]
        pos[self.root] = -1                   # the root's group has no parent column
        heads = sorted(self.exclusive_groups(), key=pos.__getitem__)
        kids = [sorted(pos[c] for c in self.graph.successors(h)) for h in heads]
        groups = np.full((len(kids), max((len(k) for k in kids), default=1)), -1, dtype=np.int64)
        for g, k in enumerate(kids):
            groups[g, : len(k)] = k
        self._compiled = TaxonomyIndex(
            ids=tuple(ids), names=tuple(self.name(n) for n in ids),
            levels=np.array([lv[n] for n in ids], dtype=np.int64),
            parent_ptr=ptr, parent_idx=pidx, parents_padded=padded,
            leaf_mask=np.array([self.graph.out_degree(n) == 0 for n in ids], dtype=bool),
            ancestors=anc, is_tree=self.is_tree,
            exclusive_parent=np.array([pos[h] for h in heads], dtype=np.int64), exclusive_children=groups,
            descriptions=tuple(self.description(n) for n in ids))
        self._compiled_key = key
        return self._compiled

    def stats(self) -> dict:
        """Node, leaf and per-level counts; ``per_level[k]`` counts level ``k + 1``."""
        lv = self.levels()
        depth = max(lv.values())
        per_level = [0] * depth
        for n, level in lv.items():
            if n != self.root:
                per_level[level - 1] += 1
        leaves = sum(1 for n in self.graph if n != self.root and self.graph.out_degree(n) == 0)
        return {"nodes": len(self), "leaves": leaves, "per_level": per_level,
                "depth": depth, "is_tree": self.is_tree,
                "edges": self.graph.number_of_edges(),
                "max_children": max((self.graph.out_degree(n) for n in self.graph), default=0),
                "multi_parent_nodes": sum(1 for n in self.graph if self.graph.in_degree(n) > 1),
                "exclusive_groups": len(self.exclusive_groups())}

    # ---- edits: each returns a new, validated Taxonomy and leaves self untouched ------------
    def copy(self) -> "Taxonomy":
        return Taxonomy(_copy.deepcopy(self.graph), self.path)

    def _need(self, node: str, what: str = "node") -> None:
        if node not in self.graph:
            raise TaxonomyError(f"unknown {what} {node!r}", self.path, item=node)

    def add(self, node: str, parents: Sequence[str] | str | None = None,
            name: str | None = None, exclusive: bool = False, description: str | None = None) -> "Taxonomy":
        """Add ``node`` under ``parents`` (default: the root); ``exclusive`` marks it; ``description``
        is its one-line description."""
        parents = [parents] if isinstance(parents, str) else list(parents or [self.root])
        if node in self.graph:
            raise TaxonomyError(f"duplicate id {node!r}: it already exists", self.path, item=node)
        for p in parents:
            self._need(p, "parent")
        t = self.copy()
        t.graph.add_node(node, **({"name": name} if name is not None else {}),
                         **({"exclusive": True} if exclusive else {}),
                         **({"description": description} if description is not None else {}))
        for p in parents:
            t.graph.add_edge(p, node, lead=[])
        return t._checked()

    def remove(self, node: str, mode: str = "refuse") -> "Taxonomy":
        """Remove ``node``.

        ``mode``: ``"refuse"`` (error if it has children), ``"reparent"`` (children move to
        its parents) or ``"subtree"`` (drop it with every descendant left without a parent).
        """
        self._need(node)
        if node == self.root:
            raise TaxonomyError("the root cannot be removed", self.path, item=node)
        kids = self.children(node)
        t = self.copy()
        g = t.graph
        if kids and mode == "refuse":
            raise TaxonomyError(f"{node!r} has {len(kids)} children ({', '.join(kids[:5])}"
                                f"{', ...' if len(kids) > 5 else ''}); re-parent them or drop "
                                "the subtree", self.path, item=node)
        if mode == "reparent":
            ps = list(g.predecessors(node))
            _replace_node(g, node, {c: ps for c in kids})
        elif mode == "subtree":
            g.remove_node(node)
            orphans = [n for n in nx.descendants(self.graph, node) if n in g and g.in_degree(n) == 0]
            while orphans:
                n = orphans.pop()
                kids_n = list(g.successors(n))
                g.remove_node(n)
                orphans.extend(c for c in kids_n if g.in_degree(c) == 0)
        elif mode == "refuse":
            g.remove_node(node)
        else:
            raise ValueError(f"unknown remove mode {mode!r}")
        return t._checked()

    def rename(self, node: str, new_id: str | None = None, name: str | None = None,
               clear_name: bool = False, description: str | None = None) -> "Taxonomy":
        """Change a node's id (keeping its place and order), its display name and/or its description
        (``""`` clears it)."""
        self._need(node)
        t = self.copy()
        if new_id is not None and new_id != node:
            if new_id in self.graph:
                raise TaxonomyError(f"duplicate id {new_id!r}: it already exists", self.path,
                                    item=new_id)
            t.graph = _relabel(t.graph, {node: new_id})
            node = new_id
        attrs = t.graph.nodes[node]
        if clear_name:
            attrs.pop("name", None)
        elif name is not None:
            attrs["name"] = name
        if description == "":
            attrs.pop("description", None)
        elif description is not None:
            attrs["description"] = description
        return t._checked()

    def set_exclusive(self, nodes: Sequence[str] | str, exclusive: bool = True) -> "Taxonomy":
        """Mark ``nodes`` (the root may be one) exclusive, or clear their mark."""
        nodes = [nodes] if isinstance(nodes, str) else list(nodes)
        for n in nodes:
            self._need(n)
        t = self.copy()
        for n in nodes:
            if exclusive:
                t.graph.nodes[n]["exclusive"] = True
            else:
                t.graph.nodes[n].pop("exclusive", None)
        return t._checked()

    def move(self, node: str, new_parent: str, keep_parents: bool = False) -> "Taxonomy":
        """Put ``node`` under ``new_parent``; with ``keep_parents`` add it as one more parent."""
        self._need(node)
        self._need(new_parent, "parent")
        if node == self.root:
            raise TaxonomyError("the root cannot be moved", self.path, item=node)
        if new_parent == node or new_parent in nx.descendants(self.graph, node):
            raise TaxonomyError(f"moving {node!r} under {new_parent!r} would make a cycle",
                                self.path, item=node)
        t = self.copy()
        if not keep_parents:
            for p in list(t.graph.predecessors(node)):
                t.graph.remove_edge(p, node)
        if not t.graph.has_edge(new_parent, node):
            t.graph.add_edge(new_parent, node, lead=[])
        return t._checked()

    def merge(self, source: str, target: str) -> "Taxonomy":
        """Fold ``source`` into ``target``: its children and parents join ``target``'s; ``target``
        keeps its own description, or takes the source's when it has none.

        ``target`` ends marked exclusive when each of the two that has children is marked (the
        merged children are exclusive only if both sides' were claimed so); when neither has
        children it keeps its own mark.
        """
        self._need(source)
        self._need(target)
        if self.root in (source, target) or source == target:
            raise TaxonomyError("merge takes two distinct non-root nodes", self.path, item=source)
        if target in nx.descendants(self.graph, source) or source in nx.descendants(self.graph, target):
            raise TaxonomyError(f"cannot merge {source!r} with its own ancestor or descendant "
                                f"{target!r}", self.path, item=source)
        claims = [n for n in (source, target) if self.graph.out_degree(n)]
        exclusive = all(map(self.is_exclusive, claims or [target]))
        t = self.copy()
        g = t.graph
        if exclusive:
            g.nodes[target]["exclusive"] = True
        else:
            g.nodes[target].pop("exclusive", None)
        if "description" in g.nodes[source]:
            g.nodes[target].setdefault("description", g.nodes[source]["description"])
        for c in list(g.successors(source)):
            if not g.has_edge(target, c):
                g.add_edge(target, c, lead=[])
        for p in list(g.predecessors(source)):
            if p != self.root and not g.has_edge(p, target):
                g.add_edge(p, target, lead=[])
        g.remove_node(source)
        return t._checked()

    def _checked(self) -> "Taxonomy":
        self.validate()
        return self

    # ---- comparison ---------------------------------------------------------------------
    def diff(self, other: "Taxonomy") -> list[str]:
        """Structural differences from ``self`` to ``other``: added, removed, moved, renamed,
        descriptions changed, and exclusive marks set or cleared (the root's too)."""
        a, b = self.graph, other.graph
        out = []
        for n in other.nodes:
            if n not in a:
                out.append(f"+ {n}  (under {', '.join(other.parents(n)) or other.root})")
        for n in self.nodes:
            if n not in b:
                out.append(f"- {n}")
        for n in [other.root, *other.nodes]:
            if n not in a:
                continue
            if n != self.root:
                pa, pb = sorted(self.parents(n)), sorted(other.parents(n))
                if pa != pb:
                    out.append(f"~ {n}: parents {pa or [self.root]} -> {pb or [other.root]}")
                if a.nodes[n].get("name") != b.nodes[n].get("name"):
                    out.append(f"~ {n}: name {a.nodes[n].get('name')!r} -> {b.nodes[n].get('name')!r}")
            if a.nodes[n].get("description") != b.nodes[n].get("description"):
                out.append(f"~ {n}: description {a.nodes[n].get('description')!r} -> "
                           f"{b.nodes[n].get('description')!r}")
            if self.is_exclusive(n) != other.is_exclusive(n):
                out.append(f"~ {n}: exclusive {_on(self.is_exclusive(n))} -> {_on(other.is_exclusive(n))}")
        return out

    def text_diff(self, other: "Taxonomy", a_name: str = "before", b_name: str = "after") -> str:
        """Unified diff of the two canonical texts (what ``--dry-run`` shows)."""
        return "".join(difflib.unified_diff(self.dumps().splitlines(True),
                                            other.dumps().splitlines(True), a_name, b_name))

    # ---- building from labels -----------------------------------------------------------
    @classmethod
    def from_paths(cls, labels: Iterable[str], sep: str, maxsplit: int = -1,
                   root: str = DEFAULT_ROOT, header: bool = True) -> "Taxonomy":
        """Build from path-like labels, children sorted by id.

        ``"a-b-c"`` with ``sep="-"`` gives nodes ``a``, ``a-b``, ``a-b-c`` (named by their last
        segment); ``maxsplit=1`` splits on the first separator only, so DuEE's
        ``"灾害/意外-坍/垮塌"`` gives ``灾害/意外`` -> ``灾害/意外-坍/垮塌`` named ``坍/垮塌``.
        """
        pairs = []
        for label in sorted(set(labels)):
            parts = label.split(sep, maxsplit)
            prefix = None
            for part in parts:
                node = part if prefix is None else prefix + sep + part
                pairs.append((prefix, node, part))
                prefix = node
        return cls.from_edges(pairs, root=root, header=header)

    @classmethod
    def from_edges(cls, edges: Iterable[tuple[str | None, str, str | None]],
                   root: str = DEFAULT_ROOT, header: bool = True) -> "Taxonomy":
        """Build from ``(parent or None for top level, child, display name or None)``.

        Children are sorted by id; a name equal to the id is dropped.
        """
        t = cls.new(root, header)
        g = t.graph
        rows = sorted(set((p or root, c, n if n != c else None) for p, c, n in edges),
                      key=lambda r: (r[1], r[0]))
        for p, c, n in rows:
            if c not in g:
                g.add_node(c, **({"name": n} if n is not None else {}))
        for p, c, _ in rows:
            if p not in g:
                raise TaxonomyError(f"unknown parent {p!r} of {c!r}", item=c)
            g.add_edge(p, c, lead=[])
        return t._checked()


def _check_line(node: str, mark: str | None, err) -> None:
    """Refuse a node line whose id or mark is not what it looks like (``err(message)`` makes the
    error naming the line): a mark other than ``!exclusive`` (misspelt, wrong case), a word of
    the id starting with ``!`` (a mark misplaced before the name, or on a line of its own), an
    id glued to the mark, and a tab or control character inside the id (a tab from a
    spreadsheet would make an id no one can type)."""
    if mark is not None and mark != EXCLUSIVE:
        raise err(f"unknown mark {mark!r}: the one mark is {EXCLUSIVE}, lowercase, last on its node's line")
    glued = _MARK_IN_ID.search(node)
    if glued:
        raise err(f"misplaced {glued.group().strip()}: a mark comes once, last on its node's line after "
                  "a space (after any display name); no word of an id starts with '!'")
    if _CONTROL.search(node):
        raise err(f"a tab or control character in id {node!r}; ids are one line of printable text "
                  "(indent with spaces, two per level)")


def _on(flag: bool) -> str:
    return "on" if flag else "off"


def _relabel(g: nx.DiGraph, mapping: dict[str, str]) -> nx.DiGraph:
    """Relabel nodes keeping node order and every node's child order."""
    h = nx.DiGraph(**_copy.deepcopy(g.graph))
    if g.graph["root"] in mapping:
        h.graph["root"] = mapping[g.graph["root"]]
    for n, attrs in g.nodes(data=True):
        h.add_node(mapping.get(n, n), **attrs)
    for n in g:
        for c in g.successors(n):
            h.add_edge(mapping.get(n, n), mapping.get(c, c), **g.edges[n, c])
    return h


def _replace_node(g: nx.DiGraph, node: str, new_parents: dict[str, list[str]]) -> None:
    """Remove ``node``, splicing its children into its place under ``new_parents``."""
    parents = list(g.predecessors(node))
    h = nx.DiGraph(**g.graph)
    for n, attrs in g.nodes(data=True):
        if n != node:
            h.add_node(n, **attrs)
    for n in g:
        if n == node:
            continue
        for c in g.successors(n):
            if c == node:
                for k in g.successors(node):
                    if n in new_parents.get(k, parents) and not h.has_edge(n, k):
                        h.add_edge(n, k, **g.edges[node, k])
            elif not h.has_edge(n, c):
                h.add_edge(n, c, **g.edges[n, c])
    g.clear()
    g.update(h)
    g.graph.update(h.graph)


def load(path: str | Path) -> Taxonomy:
    """Shorthand for :meth:`Taxonomy.load`."""
    return Taxonomy.load(path)
