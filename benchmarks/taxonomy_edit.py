"""A rename + merge + move edit of a trained DuEE run, with no training (issue 32).

Takes the base runs of benchmarks/taxonomy_update.py (``<work>/base-seed-<n>``, the taxonomy
without its five held-out leaves) and carries each onto an edited taxonomy with ``hmtc.migrate``:

    rename   竞赛行为-夺冠 -> 竞赛行为-冠军 (a new id and display name)
    merge    财经/交易-加息 + 财经/交易-降息 -> 财经/交易-利率 (a new node, rows mixed by support)
    move     司法行为-罚款 from 司法行为 to 财经/交易

Reported on the test split, gold labels mapped the same way: each edited leaf's F1 before and
after, the untouched leaves' macro-F1 before and after, and whether every untouched node's
score is bit-identical.

    python benchmarks/taxonomy_edit.py --seeds 42,43,44 --out experiments/taxonomy-edit.json
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from hmtc import HierarchicalClassifier
from hmtc.data.catalog import load_dataset
from hmtc.io import atomic_write_json
from hmtc.migrate import migrate, write_migrated
from hmtc.record import git_commit, machine_info
from hmtc.taxonomy import Taxonomy
from taxonomy_update import leaf_f1      # benchmarks/ is on the path of a script run from it

RENAME = ("竞赛行为-夺冠", "竞赛行为-冠军", "冠军")
MERGE = (("财经/交易-加息", "财经/交易-降息"), "财经/交易-利率", "利率")
MOVE = ("司法行为-罚款", "财经/交易")


def edited(tax: Taxonomy) -> tuple[Taxonomy, dict[str, str]]:
    """The edited taxonomy and the old -> new id map."""
    (a, b), merged, merged_name = MERGE
    parent = tax.parents(a)[0]
    t = tax.rename(RENAME[0], RENAME[1], name=RENAME[2])
    t = t.add(merged, parent, name=merged_name).remove(a).remove(b)
    t = t.move(*MOVE)
    return t, {RENAME[0]: RENAME[1], a: merged, b: merged}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="42,43,44")
    ap.add_argument("--work", default="runs/taxonomy-update")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = Path(args.out)
    if out.exists():
        sys.exit(f"error: {out}: exists; a record is never overwritten")
    ds = load_dataset("duee", data_dir=os.environ.get("HMTC_DATA"))
    te_texts, te_labels = list(ds.splits["test"].texts), [list(x) for x in ds.splits["test"].labels]
    per_seed = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        clf = HierarchicalClassifier.load(Path(args.work) / f"base-seed-{seed}")
        old = clf.checkpoint_
        new_tax, mapping = edited(old.taxonomy)
        t0 = time.time()
        m = migrate(old, new_tax, mapping)
        seconds = round(time.time() - t0, 1)
        s0 = clf.predict_scores(te_texts)
        pred0 = clf.predict(te_texts)
        folder = Path(args.work) / f"edited-seed-{seed}"
        if not folder.exists():
            write_migrated(m, old, folder)
        clf1 = HierarchicalClassifier.load(folder / "best")
        s1 = clf1.predict_scores(te_texts)
        pred1 = clf1.predict(te_texts)
        gold1 = [sorted({mapping.get(x, x) for x in labs}) for labs in te_labels]
        old_leaves = [x for x in old.taxonomy.nodes if not old.taxonomy.children(x)]
        touched = set(mapping) | {MOVE[0]}
        untouched = [x for x in old_leaves if x not in touched]
        new_index = m.taxonomy.compile()
        same = all(np.array_equal(s0[:, old.index.id_to_index[n]], s1[:, new_index.id_to_index[n]])
                   for n in old.index.ids if n not in touched)
        gold0 = [[x for x in labs if x in old.taxonomy] for labs in te_labels]    # the held-out leaves: none
        f0 = dict(zip(old_leaves, leaf_f1(old.index, gold0, pred0, old_leaves)))
        new_leaves = [x for x in m.taxonomy.nodes if not m.taxonomy.children(x)]
        gold1 = [[x for x in labs if x in m.taxonomy] for labs in gold1]
        f1 = dict(zip(new_leaves, leaf_f1(new_index, gold1, pred1, new_leaves)))
        (a, b), merged, _ = MERGE
        row = {"seed": seed, "migrate_seconds": seconds, "changes": m.changes,
               "renamed_f1_before_after": [round(f0[RENAME[0]], 4), round(f1[RENAME[1]], 4)],
               "moved_f1_before_after": [round(f0[MOVE[0]], 4), round(f1[MOVE[0]], 4)],
               "merged_sources_f1_before": [round(f0[a], 4), round(f0[b], 4)],
               "merged_f1_after": round(f1[merged], 4),
               "untouched_leaf_macro_f1_before_after": [round(float(np.mean([f0[x] for x in untouched])), 4),
                                                        round(float(np.mean([f1[x] for x in untouched])), 4)],
               "untouched_scores_bit_identical": bool(same)}
        print(json.dumps(row, ensure_ascii=False), flush=True)
        per_seed.append(row)
    atomic_write_json(out, {"command": shlex.join(["python", *sys.argv]), "git_commit": git_commit(),
                            "machine": machine_info(), "rename": RENAME, "merge": MERGE, "move": MOVE,
                            "per_seed": per_seed})


if __name__ == "__main__":
    main()
