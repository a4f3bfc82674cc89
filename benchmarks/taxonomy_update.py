"""Five leaves back: how well a trained run follows a taxonomy that gains nodes (issue 32).

Per seed: train the recipe on DuEE with five mid-frequency leaves removed (the taxonomy without
them, every text that carries one out of train and dev), then add them back through
``HierarchicalClassifier.update``: ``hmtc.migrate`` carries the run onto the full taxonomy (the
five start from their names) and a short fine-tune reads ``--shots`` texts of each new leaf and
``--replay`` of each old one. Reported on the whole test split: the new leaves' F1, the old
leaves' leaf macro-F1 before (the base run) and after, and the update's wall time; and the
same two figures on the update's own dev texts, which choose among update recipes without looking
at test. (The rename + merge + move scenario on the same base runs: ``taxonomy_edit.py``.)

    python benchmarks/taxonomy_update.py --seeds 42,43,44 --out experiments/taxonomy-update.json

Base runs are kept under --work (``base-seed-<n>``) and reused by a later call with the same
config, so a different update recipe reruns in minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from hmtc import HierarchicalClassifier
from hmtc.config import load_config
from hmtc.data.catalog import load_dataset
from hmtc.io import atomic_write_json
from hmtc.metrics import precision_recall_f1
from hmtc.record import git_commit, machine_info
from hmtc.taxonomy import Taxonomy


def leaf_f1(index, gold: list[list[str]], pred: list[list[str]], leaves: list[str]) -> np.ndarray:
    """Per-leaf F1 of label sets over the compiled taxonomy ``index`` (0 where a leaf has neither
    gold nor predicted texts)."""
    y, p = index.indicator(gold, close=False), index.indicator(pred, close=False)
    return precision_recall_f1(y, p, average=None, labels=[index.id_to_index[x] for x in leaves])[2]


def pick_leaves(train_labels: list[list[str]], taxonomy: Taxonomy, n: int) -> list[str]:
    """The ``n`` leaves around the median training frequency, from distinct level-1 categories."""
    counts: dict[str, int] = {}
    for labs in train_labels:
        for lab in labs:
            counts[lab] = counts.get(lab, 0) + 1
    leaves = sorted((leaf for leaf in taxonomy.nodes if not taxonomy.children(leaf)), key=lambda x: (counts.get(x, 0), x))
    mid = len(leaves) // 2
    order = sorted(leaves, key=lambda x: (abs(leaves.index(x) - mid), x))
    out, used = [], set()
    for leaf in order:
        top = taxonomy.parents(leaf)[0]
        if top not in used and len(taxonomy.children(top)) > 2:
            out.append(leaf)
            used.add(top)
        if len(out) == n:
            break
    return sorted(out)


def draw(labels: list[list[str]], per_leaf: dict[str, int], rng: np.random.Generator, exclude: set[int]) -> list[int]:
    """Row numbers holding ``per_leaf[leaf]`` texts of each leaf (drawn in sorted leaf order)."""
    rows: set[int] = set()
    by_leaf: dict[str, list[int]] = {}
    for r, labs in enumerate(labels):
        for lab in labs:
            by_leaf.setdefault(lab, []).append(r)
    for leaf in sorted(per_leaf):
        pool = [r for r in by_leaf.get(leaf, []) if r not in exclude and r not in rows]
        rows.update(rng.permutation(pool)[: per_leaf[leaf]].tolist())
    return sorted(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="experiments/duee-msml.toml")
    ap.add_argument("--seeds", default="42,43,44")
    ap.add_argument("--leaves", type=int, default=5)
    ap.add_argument("--shots", type=int, default=8, help="texts of each new leaf in the update")
    ap.add_argument("--replay", type=int, default=4, help="texts of each old leaf in the update")
    ap.add_argument("--dev", type=int, default=2, help="dev texts of each leaf for the update's thresholds")
    ap.add_argument("--update", default='{"train": {"ema": 0.0}}', help="JSON tables over the run's config for the update")
    ap.add_argument("--work", default="runs/taxonomy-update")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = Path(args.out)
    if out.exists():
        sys.exit(f"error: {out}: exists; a record is never overwritten")
    seeds = [int(s) for s in args.seeds.split(",")]
    cfg = load_config(args.config)
    ds = load_dataset(cfg.data.dataset, data_dir=os.environ.get("HMTC_DATA"))
    full = Taxonomy.load(ds.taxonomy_path)
    train, test = ds.splits["train"], ds.splits["test"]
    tr_texts, tr_labels = list(train.texts), [list(x) for x in train.labels]
    te_texts, te_labels = list(test.texts), [list(x) for x in test.labels]
    new = pick_leaves(tr_labels, full, args.leaves)
    reduced = full
    for leaf in new:
        reduced = reduced.remove(leaf)
    leaves_all = [x for x in full.nodes if not full.children(x)]
    old_leaves = [x for x in leaves_all if x not in new]
    index = full.compile()
    print(f"new leaves: {', '.join(new)}", flush=True)
    work = Path(args.work)
    per_seed = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        keep = [r for r, labs in enumerate(tr_labels) if not set(labs) & set(new)]
        base_dir = work / f"base-seed-{seed}"
        if (base_dir / "checkpoint.json").is_file():
            clf = HierarchicalClassifier.load(base_dir)
            base_seconds = json.loads((work / f"base-seed-{seed}.json").read_text())["seconds"]
        else:
            clf = HierarchicalClassifier(config=args.config, seed=seed, output_dir=str(work / "tmp"), verbose=False)
            t0 = time.time()
            clf.fit([tr_texts[r] for r in keep], [tr_labels[r] for r in keep], taxonomy=reduced)
            base_seconds = round(time.time() - t0, 1)
            clf.save(base_dir)
            atomic_write_json(work / f"base-seed-{seed}.json", {"seconds": base_seconds, "config": args.config})
        pred0 = clf.predict(te_texts)
        f_old0 = leaf_f1(index, te_labels, pred0, old_leaves)
        upd = draw(tr_labels, {x: args.shots for x in new} | {x: args.replay for x in old_leaves}, rng, set())
        dev = draw(tr_labels, {x: args.dev for x in leaves_all}, rng, set(upd))
        t0 = time.time()
        clf.update([tr_texts[r] for r in upd], [tr_labels[r] for r in upd], taxonomy=full,
                   dev=([tr_texts[r] for r in dev], [tr_labels[r] for r in dev]),
                   config=json.loads(args.update))
        update_seconds = round(time.time() - t0, 1)
        pred1 = clf.predict(te_texts)
        f_new = leaf_f1(index, te_labels, pred1, new)
        f_old1 = leaf_f1(index, te_labels, pred1, old_leaves)
        # the update's own dev texts (4 a leaf), scored the same way: what picks among recipes
        dev_pred = clf.predict([tr_texts[r] for r in dev])
        dev_gold = [tr_labels[r] for r in dev]
        row = {"seed": seed, "base_train_seconds": base_seconds, "update_seconds": update_seconds,
               "update_texts": len(upd), "update_dev_texts": len(dev),
               "new_leaf_f1": dict(zip(new, np.round(f_new, 4).tolist())), "new_leaves_mean_f1": round(float(f_new.mean()), 4),
               "old_leaf_macro_f1_before": round(float(f_old0.mean()), 4),
               "old_leaf_macro_f1_after": round(float(f_old1.mean()), 4),
               "dev_new_leaves_mean_f1": round(float(leaf_f1(index, dev_gold, dev_pred, new).mean()), 4),
               "dev_old_leaf_macro_f1": round(float(leaf_f1(index, dev_gold, dev_pred, old_leaves).mean()), 4)}
        print(json.dumps(row, ensure_ascii=False), flush=True)
        per_seed.append(row)
    keys = ["new_leaves_mean_f1", "old_leaf_macro_f1_before", "old_leaf_macro_f1_after", "update_seconds",
            "dev_new_leaves_mean_f1", "dev_old_leaf_macro_f1"]
    mean = {k: round(float(np.mean([r[k] for r in per_seed])), 4) for k in keys}
    std = {k: round(float(np.std([r[k] for r in per_seed])), 4) for k in keys}
    record = {"command": shlex.join(["python", *sys.argv]), "git_commit": git_commit(),
              "machine": machine_info(), "python": platform.python_version(), "config": args.config,
              "new_leaves": new, "shots": args.shots, "replay": args.replay, "dev_per_leaf": args.dev,
              "update_config": json.loads(args.update), "seeds": seeds, "mean": mean, "std": std, "per_seed": per_seed}
    atomic_write_json(out, record)
    print(json.dumps({"mean": mean, "std": std}), flush=True)


if __name__ == "__main__":
    main()
