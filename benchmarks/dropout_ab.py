"""torch's dropout against ``model.fast_dropout``, interleaved so that drifts in this shared
machine's speed hit both alike: ``hmtc bench``'s training step, alternating, several rounds.

    python benchmarks/dropout_ab.py [--freeze-layers 0,4] [--rounds 3] [--steps 12]

Prints each round's samples/s and the per-round ratio fast / torch. Needs $HMTC_DATA (DuEE)
and the installed me5-small encoder.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from hmtc.bench import duee_texts, train_throughput
from hmtc.taxonomy import Taxonomy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--freeze-layers", default="0,4", help="recipes: 0 = all layers train, N = lower N cached")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=12)
    args = ap.parse_args()
    taxonomy = Taxonomy.load(Path(__file__).resolve().parents[1] / "taxonomies" / "duee.tax")
    texts = duee_texts(0)
    for k in (int(x) for x in args.freeze_layers.split(",")):
        rates: dict[str, list[float]] = {"torch": [], "fast": []}
        for r in range(args.rounds):
            for kind in rates:
                out = train_throughput("msml", "me5-small", texts, taxonomy, True, 32, args.steps, threads=2,
                                       freeze_layers=k, fast_dropout=kind == "fast")
                rates[kind].append(out["samples_per_s"])
            print(f"freeze_layers={k} round {r + 1}: torch {rates['torch'][-1]:.1f}, fast {rates['fast'][-1]:.1f} samples/s",
                  flush=True)
        ratios = [f / t for f, t in zip(rates["fast"], rates["torch"])]
        print(f"freeze_layers={k}: mean torch {statistics.mean(rates['torch']):.1f}, fast "
              f"{statistics.mean(rates['fast']):.1f} samples/s; fast/torch per round "
              + ", ".join(f"{x:.3f}" for x in ratios) + f" (mean {statistics.mean(ratios):.3f})")


if __name__ == "__main__":
    main()
