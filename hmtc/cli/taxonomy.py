"""``hmtc taxonomy``: show, check, edit, build and import taxonomy files; every write is atomic and validated.

The library is imported inside each command (torch and transformers take seconds to load), so
`hmtc --help` and the other commands start at once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from ..errors import TaxonomyError
from ..taxonomy import DEFAULT_ROOT, Taxonomy

app = typer.Typer(help="Show, validate, edit and build taxonomy files (.tax).", no_args_is_help=True)
console = Console(emoji=False)
# what from-labels finds in the data goes to stderr: its stdout may hold the .tax
notes = Console(emoji=False, stderr=True, soft_wrap=True, highlight=False)
MARK = " [cyan]!exclusive[/]"

FileArg = typer.Argument(..., help="Taxonomy file (.tax).", show_default=False)
DryRun = typer.Option(False, "--dry-run", "-n", help="Show the change as a diff; leave the file as it is.")


def _apply(path: Path, before: Taxonomy, after: Taxonomy, dry_run: bool, summary: str) -> None:
    """Show the edit; unless dry-run, write it atomically (``after`` is already validated)."""
    diff = before.text_diff(after, f"{path} (before)", f"{path} (after)")
    if dry_run:
        typer.echo(diff or "(no change)", nl=not diff)
        console.print("[yellow]dry run: file unchanged[/]")
        return
    after.save(path)
    console.print(f"[green]{escape(summary)}[/] -> {escape(str(path))}")


@app.command()
def show(path: Path = FileArg,
         depth: Optional[int] = typer.Option(None, "--depth", "-d", help="Show levels down to this one."),
         ids: bool = typer.Option(False, "--ids", help="Show ids instead of display names.")) -> None:
    """Print the taxonomy as a tree, with node counts per level."""
    tax = Taxonomy.load(path)
    st = tax.stats()
    want = min(depth if depth is not None else st["depth"], st["depth"])
    fits = max(1, (console.width - 24) // 4)        # rich draws 4 columns of guides per level, and crops
    console.print(_tree(tax, path, min(want, fits), ids))
    if fits < want:
        console.print(f"[yellow]note[/]: levels below {fits} of {st['depth']} do not fit {console.width} "
                      "columns: not drawn (the counts below include them)")
    n_classes, _ = _label_classes(tax)
    console.print("per level: " + ", ".join(f"L{i + 1}={n}" for i, n in enumerate(st["per_level"]))
                  + f"; {st['leaves']} leaves; {'tree' if st['is_tree'] else 'DAG'}"
                  + (f"; {st['exclusive_groups']} exclusive groups" if st["exclusive_groups"] else "")
                  + (f"; {n_classes} labels with classes" if n_classes else ""))


def _tree(tax: Taxonomy, path: Path, depth: int, ids: bool) -> Tree:
    """The taxonomy as a rich tree down to level ``depth``, a node's later parents as "also
    here" leaves; built with a stack, as a chain thousands of levels deep is a valid taxonomy."""
    tree = Tree(f"[bold]{escape(tax.root)}[/]{MARK if tax.is_exclusive(tax.root) else ''}  ({escape(str(path))})")
    seen: set[str] = set()
    stack = [(tree, iter(tax.children(tax.root)), 1)]      # pre-order, as the file lists the nodes
    while stack:
        branch, children, level = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            continue
        label = escape(child if ids else tax.name(child))
        if child in seen:
            branch.add(f"[dim]↗ {label} (also here)[/]")
            continue
        seen.add(child)
        kids = tax.children(child)
        sub = branch.add(label + (f" [dim]({len(kids)})[/]" if kids else "")
                         + (MARK if tax.is_exclusive(child) else ""))
        if level < depth:
            stack.append((sub, iter(kids), level + 1))
    return tree


def _label_classes(tax: Taxonomy) -> tuple[int, list[str]]:
    """How many labels carry classes (docs/label-classes.md), and a line for each near miss: a
    node that is no such label, though marked !exclusive with a child ``node:<class>``, or unmarked
    with only leaves ``node:<class>`` as children (a label id may hold ':' and have children
    ``label:x`` that are labels of their own: those are left alone)."""
    from ..label_classes import class_name, label_classes
    labels = set(label_classes(tax.compile()).labels)
    misses = []
    for node in tax.nodes:
        kids = tax.children(node)
        named = [c for c in kids if class_name(node, c) is not None]
        looks = named and (tax.is_exclusive(node) or all(
            c in named and not tax.children(c) for c in kids))
        if looks and node not in labels:
            misses.append(f"{node!r} has {len(named)} of {len(kids)} children named {node}:<class>, but is "
                          "no label with classes: that needs the !exclusive mark, two or more children, "
                          "and every child a leaf under it alone, named so")
    return len(labels), misses


@app.command()
def validate(path: Path = FileArg) -> None:
    """Check a file: syntax, cycles, self-loops, unknown references, duplicate ids, one root, no
    !exclusive mark on a leaf; notes nodes with children named NODE:<class> that do not make NODE a
    label with classes."""
    tax = Taxonomy.load(path, strict=True)
    tax.validate()
    canonical = tax.dumps() == path.read_text(encoding="utf-8")
    st = tax.stats()
    n_classes, misses = _label_classes(tax)
    console.print(f"[green]valid[/]: {st['nodes']} nodes, {st['leaves']} leaves, depth {st['depth']}, "
                  f"{'tree' if st['is_tree'] else 'DAG'}"
                  + (f", {n_classes} labels with classes" if n_classes else "")
                  + ("" if canonical else "; [yellow]not in canonical form (any edit rewrites it)[/]"))
    for line in misses:
        console.print(f"[yellow]note[/]: {escape(line)}")


@app.command()
def stats(path: Path = FileArg,
          as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Node and leaf counts, depth, and the nodes on each level (per_level: level 1 first)."""
    st = Taxonomy.load(path).stats()
    if as_json:
        typer.echo(json.dumps(st, ensure_ascii=False))
        return
    table = Table(title=escape(str(path)))
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in st.items():
        table.add_row(key, ", ".join(map(str, value)) if isinstance(value, list) else str(value))
    console.print(table)


@app.command()
def add(path: Path = FileArg,
        node: str = typer.Argument(..., help="New node id."),
        parent: Optional[list[str]] = typer.Option(None, "--parent", "-p",
                                                   help="Parent id (repeat for a DAG); default: the root."),
        name: Optional[str] = typer.Option(None, "--name", help="Display name."),
        exclusive: bool = typer.Option(False, "--exclusive", help="Mark its children mutually exclusive."),
        description: Optional[str] = typer.Option(None, "--description",
                                                  help="One-line description (read by zero-shot models)."),
        dry_run: bool = DryRun) -> None:
    """Add a node.

    Example: hmtc taxonomy add events.tax 人生-退休 -p 人生 --name 退休 --description "有人离开工作岗位"
    """
    tax = Taxonomy.load(path)
    _apply(path, tax, tax.add(node, parent or None, name, exclusive, description), dry_run, f"added {node}")


@app.command()
def exclusive(path: Path = FileArg,
              nodes: list[str] = typer.Argument(..., help="Node ids (the root's id marks the level-1 nodes)."),
              off: bool = typer.Option(False, "--off", help="Clear the mark instead."),
              dry_run: bool = DryRun) -> None:
    """Mark nodes whose children are mutually exclusive (a text has at most one of them)."""
    tax = Taxonomy.load(path)
    _apply(path, tax, tax.set_exclusive(nodes, not off), dry_run,
           f"{'cleared' if off else 'marked'} {', '.join(nodes)}")


@app.command()
def remove(path: Path = FileArg,
           node: str = typer.Argument(..., help="Node id to remove."),
           reparent: bool = typer.Option(False, "--reparent", help="Move its children up to its parents."),
           subtree: bool = typer.Option(False, "--subtree", help="Drop it with all its descendants."),
           dry_run: bool = DryRun) -> None:
    """Remove a node; one with children needs --reparent or --subtree."""
    if reparent and subtree:
        raise TaxonomyError("choose one of --reparent and --subtree", path)
    tax = Taxonomy.load(path)
    mode = "reparent" if reparent else "subtree" if subtree else "refuse"
    _apply(path, tax, tax.remove(node, mode), dry_run, f"removed {node}")


@app.command()
def rename(path: Path = FileArg,
           node: str = typer.Argument(..., help="Node id."),
           new_id: Optional[str] = typer.Argument(None, help="New id (keeps place and order)."),
           name: Optional[str] = typer.Option(None, "--name", help="New display name."),
           clear_name: bool = typer.Option(False, "--clear-name", help="Drop the display name."),
           description: Optional[str] = typer.Option(None, "--description",
                                                     help="New one-line description (\"\" drops it)."),
           dry_run: bool = DryRun) -> None:
    """Change a node's id, display name and/or description."""
    if new_id is None and name is None and not clear_name and description is None:
        raise TaxonomyError("nothing to do: give NEW_ID, --name, --clear-name or --description", path)
    tax = Taxonomy.load(path)
    _apply(path, tax, tax.rename(node, new_id, name, clear_name, description), dry_run,
           f"renamed {node}" + (f" -> {new_id}" if new_id else ""))


@app.command()
def move(path: Path = FileArg,
         node: str = typer.Argument(..., help="Node id."),
         new_parent: str = typer.Argument(..., help="New parent id."),
         keep_parents: bool = typer.Option(False, "--keep-parents",
                                           help="Add NEW_PARENT as one more parent (DAG) instead."),
         dry_run: bool = DryRun) -> None:
    """Move a node (with its subtree) under another parent."""
    tax = Taxonomy.load(path)
    _apply(path, tax, tax.move(node, new_parent, keep_parents), dry_run, f"moved {node} under {new_parent}")


@app.command()
def merge(path: Path = FileArg,
          source: str = typer.Argument(..., help="Node to fold away."),
          target: str = typer.Argument(..., help="Node that takes its children and parents."),
          dry_run: bool = DryRun) -> None:
    """Merge SOURCE into TARGET (relabel SOURCE as TARGET in your data).

    TARGET stays or becomes !exclusive only when each of the two that has children is marked.
    """
    tax = Taxonomy.load(path)
    after = tax.merge(source, target)
    was, now = tax.is_exclusive(target), after.is_exclusive(target)
    note = "" if was == now else (f" ({target} now !exclusive)" if now else
                                  f" ({target} no longer !exclusive: {source}'s and its children were not both marked)")
    _apply(path, tax, after, dry_run, f"merged {source} into {target}{note}")


@app.command()
def diff(a: Path = typer.Argument(..., help="Old taxonomy."),
         b: Path = typer.Argument(..., help="New taxonomy."),
         text: bool = typer.Option(False, "--text", help="Unified diff of the canonical texts.")) -> None:
    """Nodes added, removed, moved or renamed from A to B; exit code 1 when they differ."""
    ta, tb = Taxonomy.load(a), Taxonomy.load(b)
    changes = ta.diff(tb)
    if text:
        typer.echo(ta.text_diff(tb, str(a), str(b)) or "(no change)", nl=False)
    else:
        for line in changes:
            style = {"+": "green", "-": "red"}.get(line[0], "yellow")
            console.print(f"[{style}]{escape(line)}[/]", highlight=False)
        if not changes:
            console.print("no structural change")
    raise typer.Exit(1 if changes else 0)


@app.command("from-labels")
def from_labels(source: str = typer.Argument(..., help="Built-in dataset (duee, goemotions, 20newsgroups), "
                                                    "dataset TOML, or a labelled file."),
                out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write here (default: stdout)."),
                fmt: str = typer.Option("label_text", "--format",
                                        help="For a file: label_text (DuEE 'l1|l2 text'), jsonl, or lines (one label path per line)."),
                sep: Optional[str] = typer.Option(None, "--sep", help="Path separator inside a label, e.g. '-' or '.'."),
                maxsplit: int = typer.Option(-1, "--maxsplit", help="Split a label at most this many times (-1: all)."),
                root: str = typer.Option(DEFAULT_ROOT, "--root", help="Root id."),
                data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Dataset folder (else $HMTC_DATA)."),
                force: bool = typer.Option(False, "--force", help="Overwrite OUT if it exists."),
                exclusive: bool = typer.Option(False, "--exclusive",
                                               help="Mark every internal node and the root !exclusive "
                                                    "(for single-path data)."),
                dry_run: bool = DryRun) -> None:
    """Derive a taxonomy from the labels of a dataset (children sorted by id), and say whether the
    data is single-path: every sample's labels on one path from the root.

    A dataset's labels are read from every split it lists, so that a label only dev or test has
    is a node too.
    """
    src = Path(source)
    if src.is_file() and src.suffix != ".toml":
        if sep is None:
            raise TaxonomyError("--sep is needed to split labels into paths (e.g. --sep - for DuEE)", src)
        label_sets = _read_label_sets(src, fmt)
        tax = Taxonomy.from_paths([lab for labels in label_sets for lab in labels], sep=sep,
                                  maxsplit=maxsplit, root=root)
        samples = fmt != "lines"              # one label path per line: no samples to check
    else:
        from ..data.builders import dataset_label_sets, taxonomy_from_dataset
        from ..data.catalog import get_spec
        # a dataset that says nothing on its taxonomy is refused before its data is read
        spec = get_spec(source)
        label_sets = dataset_label_sets(source, data_dir=data_dir) if spec.taxonomy_from else None
        tax = taxonomy_from_dataset(source, data_dir=data_dir, label_sets=label_sets)
        samples = True
        notes.print(f"labels of {len(label_sets)} samples read from every split: {', '.join(spec.splits)}")
    if samples:
        _say_single_path(tax, label_sets, exclusive)
    elif exclusive:
        notes.print("the lines format lists labels, not samples: whether the data is single-path is not checked")
    if exclusive:
        tax = tax.set_exclusive([n for n in tax.graph if tax.graph.out_degree(n)])
    if out is None:
        typer.echo(tax.dumps(), nl=False)
        return
    if out.exists() and not force and not dry_run:
        raise TaxonomyError("exists; pass --force to overwrite (or --dry-run to compare)", out)
    before = Taxonomy.load(out) if out.exists() else Taxonomy.new(root, header=False)
    _apply(out, before, tax, dry_run, f"wrote {len(tax)} nodes")


@app.command("import")
def import_(source: Path = typer.Argument(..., show_default=False,
                                         help="HiAGM / HGCLR .taxonomy file: parent<TAB>child... lines under Root."),
            out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write here (default: stdout)."),
            force: bool = typer.Option(False, "--force", help="Overwrite OUT if it exists."),
            merge_repeated: bool = typer.Option(False, "--merge-repeated",
                                                help="Read a name listed under several parents as one node "
                                                     "with those parents (a DAG), not one node per parent.")) -> None:
    """Convert a .taxonomy file (WOS, RCV1-V2, NYT as HiAGM and HGCLR ship them) to .tax.

    A leaf name listed under two parents (WOS: Depression under Medical and Psychology) becomes
    one node per parent, id PARENT/NAME with the name kept for display, so that closing a gold set
    under ancestors adds no parent the papers' gold sets lack; the dataset readers map the name to
    the node under the parent its gold set lists.
    """
    from ..data.readers import read_hiagm_taxonomy
    tax = read_hiagm_taxonomy(source, merge_repeated)
    if out is None:
        typer.echo(tax.dumps(), nl=False)
        return
    if out.resolve() == source.resolve():
        raise TaxonomyError("OUT is the source file; write the .tax elsewhere", out)
    if out.exists() and not force:
        raise TaxonomyError("exists; pass --force to overwrite", out)
    tax.save(out)
    st = tax.stats()
    shape = "tree" if st["is_tree"] else f"DAG, {st['multi_parent_nodes']} nodes with several parents"
    split = sum(1 for n in tax.nodes if tax.name(n) != n)
    console.print(f"[green]imported {st['nodes']} nodes[/] ({shape}"
                  + (f"; {split} nodes for names listed under several parents, ids PARENT/NAME" if split else "")
                  + f") -> {escape(str(out))}")


def _say_single_path(tax: Taxonomy, label_sets: list[list[str]], exclusive: bool) -> None:
    """Tell whether every sample's labels lie on one path from the root, which is what the
    ``!exclusive`` marks of ``--exclusive`` claim."""
    from ..data.builders import off_path_samples
    off = off_path_samples(tax.compile(), label_sets)
    n, bad = len(off), int(off.sum())
    if not bad:
        notes.print(f"single-path: each of the {n} samples has its labels on one path from the root"
                    + ("" if exclusive else "; --exclusive marks every sibling group exclusive"))
        return
    first = int(off.argmax())
    notes.print(f"not single-path: {bad} of {n} samples have two or more labels under one node "
                f"(sample {first + 1}: {escape(', '.join(label_sets[first]))})"
                + ("; --exclusive marks the groups anyway, and training or evaluating on data holding "
                   "such samples is refused until their labels keep the marks" if exclusive else ""))


def _read_label_sets(path: Path, fmt: str) -> list[list[str]]:
    """Each sample's labels; for ``lines``, each line's one label path."""
    if fmt == "lines":
        return [[ln.strip()] for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    from ..data import readers
    if fmt == "label_text":
        ex = readers.read_label_text(path)
    elif fmt == "jsonl":
        ex = readers.read_jsonl(path)
    else:
        raise TaxonomyError(f"unknown --format {fmt!r}; use label_text, jsonl or lines", path)
    return [list(labels) for labels in ex.labels]
