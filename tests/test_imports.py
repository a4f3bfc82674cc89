"""Imports flow one way: no cycle among hmtc's modules (module level or inside functions), and
in-function imports only where they defer a heavy optional dependency or, in the CLI and the
package's lazy exports (``hmtc/__init__.py``), the library."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import networkx as nx

import hmtc

ROOT = Path(hmtc.__file__).parent
# optional extras, heavy plotting, and scikit-learn's models, which only the TF-IDF model fits
# (every command that loads a checkpoint registers it; none but a TF-IDF run needs sklearn)
DEFERRABLE = ("onnx", "onnxruntime", "matplotlib", "sklearn")


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path):
    """(target module, in a function, line) for every import of an hmtc module in ``path``."""
    name, tree = _module(path), ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    in_function = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                   for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            yield t, id(node) in in_function, node.lineno


def _graph() -> tuple[nx.DiGraph, list[str]]:
    files = sorted(ROOT.rglob("*.py"))
    modules = {_module(p) for p in files}
    g, deferred = nx.DiGraph(), []
    for path in files:
        src = _module(path)
        g.add_node(src)
        for target, in_function, line in _imports(path):
            if target in modules and target != src:
                g.add_edge(src, target)
            if in_function:
                deferred.append((path.relative_to(ROOT.parent).as_posix(), line, target))
    return g, deferred


def test_no_import_cycle():
    g, _ = _graph()
    # a package's __init__ importing its own submodules is how it registers them, not a cycle
    own = [(a, b) for a, b in g.edges if b.startswith(a + ".")]
    g.remove_edges_from(own)
    cycles = list(nx.simple_cycles(g))
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c + [c[0]]) for c in cycles[:5])


def test_in_function_imports_only_defer_optional_dependencies():
    _, deferred = _graph()
    # the estimator defers the training and inference stack so that importing it takes under a second
    bad = [(f, line, t) for f, line, t in deferred
           if not f.startswith("hmtc/cli/") and f not in ("hmtc/__init__.py", "hmtc/estimator.py")
           and not t.split(".")[0] in DEFERRABLE]
    assert not bad, bad


def test_the_estimator_imports_without_the_training_stack():
    """``from hmtc import HierarchicalClassifier`` loads neither torch nor transformers."""
    import subprocess
    import sys
    code = ("import sys; from hmtc import HierarchicalClassifier; "
            "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]; "
            "assert not heavy, heavy")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_import_hmtc_is_cheap():
    """``import hmtc`` loads no heavy library; the estimator comes on first use."""
    code = ("import sys, hmtc; heavy = [m for m in ('torch', 'transformers', 'sklearn') if m in sys.modules]; "
            "assert not heavy, heavy; assert hmtc.HierarchicalClassifier.__module__ == 'hmtc.estimator'")
    subprocess.run([sys.executable, "-c", code], check=True)
