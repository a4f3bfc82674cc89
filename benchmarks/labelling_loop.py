"""What to label next, simulated (issue 32): does ``hmtc suggest`` pick better texts than chance?

Per seed: start from K texts per node drawn from the training split (``hmtc.data.sampling.draw_shots``,
as ``data.shots = K`` draws them) and a dev set drawn the same way from the dev split (kept for
every round); the rest of the training split is the pool, its gold labels hidden until a text is
picked. Each round trains the recipe on the labelled texts (``HierarchicalClassifier.fit``, dev for
the thresholds; where the dataset has no dev split, drawn from the training split and kept out of
the pool), scores the whole test split, then picks ``--batch`` texts from the pool (strategy
``uncertain``: :func:`hmtc.suggest.suggest`'s hierarchy-aware uncertainty with k-centre diversity;
``random``: a seeded draw) and reveals their labels. Round 0 is one model shared by both
strategies. The record holds each round's test leaf macro- and micro-F1 per seed and strategy and
their means, and ``hmtc results`` draws the curves (``experiments/loops/``).

The recipe is the dataset's few-shot config with every encoder layer but the top one frozen and
their states kept on disk (``train.frozen_store``), so the pool and the test split go through the
lower layers once for all rounds, seeds and strategies; the whole vocabulary kept (a pruned one
would tokenize the pool otherwise and miss its stored states) and no resume state written each
epoch (``train.save_every = 0``: a fit this short spends most of its time writing them):

    python benchmarks/labelling_loop.py --config experiments/duee-fewshot.toml --seeds 42,43,44 \\
        --out experiments/loops/labelling-duee.json
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
from hmtc.data.sampling import draw_shots
from hmtc.inference import score_texts
from hmtc.io import atomic_write_json
from hmtc.metrics import evaluate
from hmtc.predict import decode_checkpoint
from hmtc.record import git_commit, machine_info
from hmtc.suggest import STRATEGIES, WEIGHTS, suggest
from hmtc.taxonomy import Taxonomy

RECIPE = {"model": {"freeze_layers": 11},
          "train": {"cache_frozen": True, "frozen_store": True, "prune_vocab": False, "save_every": 0, "record_dir": ""}}
KEYS = ("leaf_macro_f1", "leaf_micro_f1")


def test_scores(clf: HierarchicalClassifier, texts: list[str], gold: np.ndarray) -> dict:
    """Leaf macro- and micro-F1 of the fitted run on ``texts`` (decoded as ``hmtc predict`` does)."""
    ckpt = clf.checkpoint_
    scores = score_texts(ckpt.model, texts)[0]
    keep, _ = decode_checkpoint(ckpt, scores)
    m = evaluate(gold, keep, ckpt.index, include_per_label=False)
    return {k: round(float(m[k]), 4) for k in KEYS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="the dataset's few-shot config")
    ap.add_argument("--seeds", default="42,43,44")
    ap.add_argument("--start", type=int, default=8, help="labelled texts per node before round 1 (K)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=200, help="texts labelled per round")
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--weights", default="pool", choices=WEIGHTS, help="what makes a node rare to `uncertain`")
    ap.add_argument("--recipe", default=json.dumps(RECIPE), help="JSON tables over the config")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = Path(args.out)
    if out.exists():
        sys.exit(f"error: {out}: exists; a record is never overwritten")
    seeds = [int(s) for s in args.seeds.split(",")]
    strategies = args.strategies.split(",")
    # the loop draws the texts itself: the config's few-shot protocol goes back to the defaults
    cfg = load_config(args.config).merged(json.loads(args.recipe)).merged({"data": {"shots": "all", "dev_shots": "shots"}})
    ds = load_dataset(cfg.data.dataset, data_dir=os.environ.get("HMTC_DATA"))
    taxonomy = Taxonomy.load(ds.taxonomy_path)
    index = taxonomy.compile()
    split = {s: (list(d.texts), [list(x) for x in d.labels]) for s, d in ds.splits.items()}
    y = {s: index.indicator(split[s][1]) for s in split}
    started = time.time()
    per_seed = []
    for seed in seeds:
        t0 = time.time()
        start, _ = draw_shots(y["train"], index, args.start, seed, stream=0)
        # dev as data.dev_shots draws it: from the dev split, or from what the train draw left
        own = "dev" if "dev" in split else "train"
        exclude = None if own == "dev" else np.isin(np.arange(len(y["train"])), start)
        dev, _ = draw_shots(y[own], index, args.start, seed, stream=1, exclude=exclude)
        dev_set = ([split[own][0][i] for i in dev], [split[own][1][i] for i in dev])
        hidden = set(dev.tolist()) if own == "train" else set()
        first = tuple(int(i) for i in start)
        fitted: dict[tuple, tuple] = {}

        def fit(rows: list[int]) -> tuple[HierarchicalClassifier, dict]:
            """The recipe fitted on ``rows`` and its test point (round 0's model kept for every strategy)."""
            key = tuple(sorted(rows))
            if key not in fitted:
                clf = HierarchicalClassifier(config=cfg, seed=seed, verbose=False)
                t = time.time()
                clf.fit([split["train"][0][i] for i in key], [split["train"][1][i] for i in key], dev=dev_set,
                        taxonomy=taxonomy)
                fit_seconds = round(time.time() - t, 1)
                for old in [k for k in fitted if k != first]:
                    del fitted[old]
                fitted[key] = (clf, {"labelled": len(key), **test_scores(clf, split["test"][0], y["test"]),
                                     "fit_seconds": fit_seconds})
            return fitted[key]

        row = {"seed": seed, "start_texts": int(len(start)), "dev_texts": int(len(dev)), "dev_from": own}
        for strategy in strategies:
            labelled = [int(i) for i in start]
            curve = []
            for r in range(args.rounds + 1):
                clf, point = fit(labelled)
                curve.append(point)
                print(json.dumps({"seed": seed, "strategy": strategy, "round": r, **point}), flush=True)
                if r == args.rounds:
                    break
                taken = set(labelled) | hidden
                pool = [i for i in range(len(split["train"][0])) if i not in taken]
                texts = [split["train"][0][i] for i in pool]
                picks = suggest(clf.checkpoint_, texts, args.batch, strategy, seed=seed * 100 + r,
                                scores=score_texts(clf.checkpoint_.model, texts)[0], weights=args.weights)
                labelled += [pool[p.line] for p in picks]
            row[strategy] = curve
        row["seconds"] = round(time.time() - t0, 1)
        per_seed.append(row)
    mean, std = {}, {}
    for strategy in strategies:
        for k in KEYS:
            vals = np.array([[p[k] for p in row[strategy]] for row in per_seed])
            mean.setdefault(strategy, {})[k] = np.round(vals.mean(0), 4).tolist()
            std.setdefault(strategy, {})[k] = np.round(vals.std(0, ddof=1) if len(seeds) > 1 else 0 * vals[0], 4).tolist()
        mean[strategy]["labelled"] = np.round(np.mean([[p["labelled"] for p in row[strategy]] for row in per_seed], 0),
                                              1).tolist()
    record = {"kind": "labelling-loop", "dataset": cfg.data.dataset, "command": shlex.join(["python", *sys.argv]),
              "git_commit": git_commit(), "machine": machine_info(), "python": platform.python_version(),
              "config": args.config, "recipe": json.loads(args.recipe), "start_shots": args.start,
              "rounds": args.rounds, "batch": args.batch, "seeds": seeds, "strategies": strategies,
              "weights": args.weights,
              "seconds": round(time.time() - started, 1), "mean": mean, "std": std, "per_seed": per_seed}
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, record)
    print(json.dumps({"mean": mean}), flush=True)


if __name__ == "__main__":
    main()
