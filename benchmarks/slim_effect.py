"""What slimming a run's checkpoint costs: its test split scored by the checkpoint as trained and
by a copy with the vocabulary pruned to the training and dev texts and the weights stored in a
compact dtype (:func:`hmtc.slim.slim_checkpoint`).

Prints (or writes with --json) the weights' bytes before and after, the vocabulary before and after,
the test split's leaf micro / macro-F1 of both, the share of test texts whose decoded label set
changed, the largest change of a reported probability, and how many test texts hold a piece the
pruned vocabulary lacks.

    python benchmarks/slim_effect.py runs/quickstart [--dtype float16] [--no-prune] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from hmtc.checkpoint import locate
from hmtc.data.prepare import prepare, taxonomy_for
from hmtc.loading import load_checkpoint
from hmtc.metrics import evaluate
from hmtc.predict import predict_rows
from hmtc.record import git_commit, machine_info
from hmtc.slim import KEEP_TOP, slim_checkpoint


def decoded(ckpt, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(kept nodes, probabilities) of each text, as ``hmtc predict`` reports them."""
    rows, probs = predict_rows(ckpt, texts)
    keep = np.zeros((len(texts), ckpt.index.n_nodes), dtype=bool)
    for i, row in enumerate(rows):
        keep[i, [ckpt.index.id_to_index[n] for n in row["labels"]]] = True
    p = np.stack([q if q is not None else np.zeros(ckpt.index.n_nodes) for q in probs])
    return keep, p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--dtype", default="float16", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--no-prune", action="store_true")
    ap.add_argument("--keep-top", type=int, default=None, help="most probable pieces kept (default: hmtc.slim.KEEP_TOP)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    t0 = time.time()
    _, ckpt_dir = locate(args.run)
    before = load_checkpoint(ckpt_dir)
    cfg = before.config
    data = prepare(cfg, taxonomy_for(cfg))
    split = "test" if "test" in data.texts else "dev"
    test, gold = data.texts[split], data.labels[split]
    seen = data.texts["train"] + data.texts["dev"] + list(before.index.names)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "best"
        shutil.copytree(ckpt_dir, copy, symlinks=False)
        info = slim_checkpoint(copy, seen, [before.model.text_prefix], prune=not args.no_prune, dtype=args.dtype,
                               keep_top=KEEP_TOP if args.keep_top is None else args.keep_top)
        after = load_checkpoint(copy)
        ids_before = before.model.tokenizer(test, add_special_tokens=False)["input_ids"]
        unk = after.model.tokenizer.unk_token_id
        ids_after = after.model.tokenizer(test, add_special_tokens=False)["input_ids"]
        resegmented = sum(len(a) != len(b) for a, b in zip(ids_before, ids_after))
        with_unk = sum(unk in a for a in ids_after) - sum(before.model.tokenizer.unk_token_id in b for b in ids_before)
        keep_a, p_a = decoded(before, test)
        keep_b, p_b = decoded(after, test)
    ma, mb = evaluate(gold, keep_a, before.index), evaluate(gold, keep_b, before.index)
    out = {"run": str(args.run), "split": split, "texts": len(test), **info,
           "leaf_micro_f1": [ma["leaf_micro_f1"], mb["leaf_micro_f1"]],
           "leaf_macro_f1": [ma["leaf_macro_f1"], mb["leaf_macro_f1"]],
           "changed_label_sets": float((keep_a != keep_b).any(axis=1).mean()),
           "max_prob_change": float(np.abs(p_a - p_b).max()),
           "texts_resegmented": resegmented, "texts_gaining_unk": with_unk,
           "command": "python benchmarks/slim_effect.py " + " ".join(
               [str(args.run), "--dtype", args.dtype] + (["--no-prune"] if args.no_prune else [])
               + ([f"--keep-top={args.keep_top}"] if args.keep_top is not None else [])),
           "keep_top": KEEP_TOP if args.keep_top is None else args.keep_top,
           "git_commit": git_commit(), "machine": machine_info(), "seconds": round(time.time() - t0, 1)}
    text = json.dumps(out, indent=2, ensure_ascii=False)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
