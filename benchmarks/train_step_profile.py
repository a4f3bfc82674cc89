"""Where a training step's time goes: torch.profiler over DuEE-length MSML steps (CPU).

    python benchmarks/train_step_profile.py [--fast-dropout] [--freeze-layers 6] [--steps 12]

Prints forward / backward / optimizer seconds, samples/s (under the profiler, so a little below
``hmtc bench``) and the operators with the most self time. Needs $HMTC_DATA (DuEE) and the
installed me5-small encoder.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from hmtc.bench import _TrainSetting, duee_texts
from hmtc.taxonomy import Taxonomy
from hmtc.models import autocast


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fast-dropout", action="store_true", help="model.fast_dropout = true")
    ap.add_argument("--freeze-layers", type=int, default=0,
                    help="lower encoder layers frozen and cached, as train.cache_frozen does")
    ap.add_argument("--steps", type=int, default=12, help="profiled steps (after 3 warm-up steps)")
    ap.add_argument("--rows", type=int, default=15, help="operators listed")
    args = ap.parse_args()
    torch.set_num_threads(2)
    taxonomy = Taxonomy.load(Path(__file__).resolve().parents[1] / "taxonomies" / "duee.tax")
    # the bench's setting (model, AdamW, EMA, representative batches), warmed up; its step is
    # re-run here with a timer between forward, backward and the optimizer
    ts = _TrainSetting("msml", "me5-small", duee_texts(0), taxonomy, True, 32, args.steps, 3, 2,
                       args.freeze_layers, None, 0.998, args.fast_dropout)
    seconds = dict.fromkeys(("forward", "backward", "optimizer"), 0.0)
    n = 0
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for b in ts.timed:
            inputs = ts._inputs(b)
            t0 = time.perf_counter()
            with autocast(torch.device("cpu"), True):
                loss = ts.model(**inputs).loss
            t1 = time.perf_counter()
            ts.opt.zero_grad(set_to_none=True)
            loss.backward()
            t2 = time.perf_counter()
            torch.nn.utils.clip_grad_norm_(ts.params, 1.0)
            ts.opt.step()
            ts.ema.update()
            for key, dt in zip(seconds, (t1 - t0, t2 - t1, time.perf_counter() - t2)):
                seconds[key] += dt
            n += len(b)
    total = sum(seconds.values())
    print(f"fast_dropout={args.fast_dropout}, freeze_layers={args.freeze_layers}: {n} samples in {total:.2f} s "
          f"({n / total:.1f} samples/s); "
          + ", ".join(f"{k} {v:.2f} s" for k, v in seconds.items()))
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
