"""What MSML's TextCNN towers cost per training step, next to flat's head (CPU, bf16 autocast).

    python benchmarks/tower_cost.py [--rounds 3] [--steps 20]

Times forward + backward of DuEE's two towers (kernels 3/5/7 and 1/3/5) on 32 × 42 token states
of width 384, at full width and with narrower ``conv_dim`` / ``filters``, and of flat's mean pool
+ linear, interleaved over rounds. Milliseconds per step; no data or encoder needed.
"""

from __future__ import annotations

import argparse
import time

import torch

from hmtc.models.msml import TextCNNTower

VARIANTS = [(None, 128), (128, 128), (64, 128), (128, 64), (64, 64)]     # (conv_dim, filters)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per variant and round")
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    states = torch.randn(32, 42, 384)
    mask = torch.ones(32, 42, dtype=torch.long)
    mask[:, 35:] = 0
    heads = {f"towers conv_dim={c} filters={f}": [TextCNNTower(384, k, f, 384, 0.1, c) for k in ([3, 5, 7], [1, 3, 5])]
             for c, f in VARIANTS}
    heads["flat head (mean pool + linear)"] = [torch.nn.Linear(384, 74)]

    def step(modules) -> None:
        x = states.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            if isinstance(modules[0], TextCNNTower):
                out = sum(t(x, mask).float().sum() for t in modules)
            else:
                m = mask.float()[..., None]
                out = modules[0]((x * m).sum(1) / m.sum(1)).float().sum()
        out.backward()

    times = {name: [] for name in heads}
    for r in range(args.rounds):
        for name in (list(heads) if r % 2 == 0 else list(heads)[::-1]):
            for _ in range(3):
                step(heads[name])
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(heads[name])
            times[name].append(1000 * (time.perf_counter() - t0) / args.steps)
    for name, ms in times.items():
        print(f"{name:40s} " + " ".join(f"{x:6.1f}" for x in ms) + " ms/step")


if __name__ == "__main__":
    main()
