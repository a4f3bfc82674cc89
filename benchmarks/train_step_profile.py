"""Where a training step's time goes: torch.profiler over DuEE-length MSML steps (CPU).

    python benchmarks/train_step_profile.py [--fast-dropout] [--freeze-layers N] [--steps 12]

Prints forward / backward / optimizer seconds, samples/s (under the profiler, so a little below
``hmtc bench``) and the operators with the most self time. Needs $HMTC_DATA (DuEE) and the
installed me5-small encoder.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from hmtc.batching import collate, tokenize
from hmtc.bench import _config, duee_texts, representative_batches
from hmtc.taxonomy import Taxonomy
from hmtc.train import EMA, autocast, build_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fast-dropout", action="store_true", help="model.fast_dropout = true")
    ap.add_argument("--steps", type=int, default=12, help="profiled steps (after 3 warm-up steps)")
    ap.add_argument("--rows", type=int, default=15, help="operators listed")
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    index = Taxonomy.load(Path(__file__).resolve().parents[1] / "taxonomies" / "duee.tax").compile()
    model, tok = build_model(_config("msml", "me5-small", True, 2, fast_dropout=args.fast_dropout), index)
    ids = tokenize(tok, duee_texts(0), 128)
    batches, warmup = representative_batches([len(x) for x in ids], 32, args.steps, 3)
    y = index.closure(np.random.default_rng(0).random((len(ids), index.n_nodes)) < 2 / index.n_nodes)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, fused=True)
    ema = EMA(params, 0.998)
    model.train()
    seconds = dict.fromkeys(("forward", "backward", "optimizer"), 0.0)
    prof, n = profile(activities=[ProfilerActivity.CPU]), 0
    for step, b in enumerate(batches):
        if step == warmup:
            prof.start()
        x, m = collate([ids[i] for i in b], tok.pad_token_id or 0)
        t0 = time.perf_counter()
        with autocast(torch.device("cpu"), True):
            loss = model(input_ids=x, attention_mask=m, labels=torch.as_tensor(y[b], dtype=torch.float32)).loss
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update()
        if step >= warmup:
            for key, dt in zip(seconds, (t1 - t0, t2 - t1, time.perf_counter() - t2)):
                seconds[key] += dt
            n += len(b)
    prof.stop()
    total = sum(seconds.values())
    print(f"fast_dropout={args.fast_dropout}: {n} samples in {total:.2f} s ({n / total:.1f} samples/s); "
          + ", ".join(f"{k} {v:.2f} s" for k, v in seconds.items()))
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
