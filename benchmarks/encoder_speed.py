"""Seconds per crop of a foundation-size tile encoder on the CPU, and what it means per slide.

A fixed sample of crops (seeded random RGB; a ViT's cost does not depend on the pixels) goes
through the plain-torch ViT of UNI's architecture (ViT-L/16, 224 px, random weights: the timing
is what matters) and, as the baseline in the same run, through the built-in texture encoder
that the existing slide benchmarks use. Each encoder runs in its own child process with a fixed
number of torch threads, so the peak resident memory is its own.

Per slide, the encoder's share is extrapolated from the measured seconds per crop, and printed
as such: SEW magnifies ``--sew-crops`` regions (4), tile ABMIL encodes every tissue tile
(``--abmil-tiles``; default 10,445, the tissue tiles of the 40,960² synthetic slide counted by
``benchmarks/slide_inference.py``). Tissue detection, reading and the graph are not included.

    python benchmarks/encoder_speed.py --threads 1 --crops 8   # a few minutes on a busy 2-core box

Each JSON line also records the machine's load average during the run: on a shared machine
the figures are upper bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, os, resource, sys, time
import torch

encoder, threads, n_crops, batch, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
from workbench.models import ENCODER_ARCHITECTURES, ModuleEncoder, TextureEncoder, VisionTransformer

if encoder == "texture":
    enc = TextureEncoder()
else:
    arch = ENCODER_ARCHITECTURES[encoder]
    torch.manual_seed(seed)
    vit = VisionTransformer(**arch.vit).eval()
    enc = ModuleEncoder(vit, input_size=arch.input_size, mpp=arch.mpp, mean=arch.mean,
                        std=arch.std, name=encoder, embed_dim=vit.out_dim, sha256="0" * 64)
size = int(enc.input_size)
g = torch.Generator().manual_seed(seed)
crops = torch.rand(n_crops, 3, size, size, generator=g)
with torch.no_grad():
    enc(crops[:1])  # warm-up (allocations, first-call work)
    times = []
    for start in range(0, n_crops, batch):
        part = crops[start:start + batch]
        t0 = time.perf_counter()
        out = enc(part)["embedding"]
        times.append((time.perf_counter() - t0) / len(part))
times.sort()
print(json.dumps({
    "encoder": encoder, "threads": threads, "batch": batch, "crops": n_crops,
    "input_size": size, "embed_dim": int(out.shape[1]),
    "params_m": round(sum(p.numel() for p in enc.parameters()) / 1e6, 1),
    "s_per_crop_median": round(times[len(times) // 2], 4),
    "s_per_crop_min": round(times[0], 4),
    "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    "load_avg_1m": round(os.getloadavg()[0], 2),
}))
"""


def _run(encoder: str, threads: int, crops: int, batch: int, seed: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    args = [encoder, str(threads), str(crops), str(batch), str(seed)]
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, *args], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoders", nargs="+", default=["uni", "texture"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1])
    ap.add_argument("--crops", type=int, default=8, help="crops timed per encoder (fixed sample)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sew-crops", type=int, default=4, help="regions SEW magnifies per slide")
    ap.add_argument("--abmil-tiles", type=int, default=10_445, help="tissue tiles of the slide")
    ap.add_argument("--out", help="also append the JSON lines to this file")
    args = ap.parse_args(argv)
    lines = []
    for threads in args.threads:
        for encoder in args.encoders:
            res = _run(encoder, threads, args.crops, args.batch, args.seed)
            t = res["s_per_crop_median"]
            res.update(
                machine=platform.machine(),
                cpus=os.cpu_count(),
                sew_encoder_s_per_slide=round(args.sew_crops * t, 2),
                abmil_encoder_s_per_slide_extrapolated=round(args.abmil_tiles * t, 1),
                abmil_tiles=args.abmil_tiles,
                sew_crops=args.sew_crops,
                note="per-slide figures = measured s/crop x crops (encoder only; extrapolated)",
            )
            lines.append(res)
            print(json.dumps(res), flush=True)
    if args.out:
        with open(args.out, "a") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
