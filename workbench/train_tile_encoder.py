"""Train the packaged ``crc_biopsy`` tile encoder: ``python -m workbench.train_tile_encoder``.

Reads the EBHI-Seg images of the shared real data (``--data``, the folder holding
``masks/ebhi_seg``), trains :class:`~workbench.models.TissueNet` on the five classes of the
images of the ``train`` cases (the fixed case split of
:func:`workbench.datasets.ebhi_case_split`), logs the accuracy on the ``val`` cases after every
epoch, and writes ``model.safetensors`` + ``config.json`` to ``--out`` (default: the packaged
folder, so a rerun replaces the packaged weights). The ``test`` cases are never read. The
configuration records the data, split, recipe, per-epoch log and wall time.

One torch thread by default; 20 epochs take 15–35 min on a 2-core machine, depending on its
load. A user's mistake ends in one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from workbench._argtypes import whole

__all__ = ["main"]


def _load(images):
    """The images as one float tensor (N, 3, H, W) in [0, 1].

    Raises :class:`~workbench.InvalidImageError` naming the first file that cannot be
    decoded or whose size differs from the first image's (the recipe crops every image alike).
    """
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    from workbench._errors import InvalidImageError

    out = []
    for im in images:
        try:
            with Image.open(im.image_path) as pil:
                arr = np.asarray(pil.convert("RGB"), np.float32) / 255.0
        except (UnidentifiedImageError, OSError, SyntaxError) as err:
            raise InvalidImageError(
                f"cannot decode image {im.image_path} ({type(err).__name__}: {err}); "
                "replace or remove the file"
            ) from None
        if out and arr.shape != tuple(out[0].shape):
            raise InvalidImageError(
                f"image {im.image_path} is {arr.shape[1]}x{arr.shape[0]} px, the others "
                f"{out[0].shape[1]}x{out[0].shape[0]}; the training images must share one size"
            )
        out.append(torch.from_numpy(arr))
    return torch.stack(out).permute(0, 3, 1, 2).contiguous()


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (see the module documentation).

    Parameters
    ----------
    argv
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 2 on a user's mistake.
    """
    parser = argparse.ArgumentParser(prog="python -m workbench.train_tile_encoder")
    parser.add_argument("--data", default=os.environ.get("WORKBENCH_REAL_DATA", "../shared/data"),
                        help="the shared real data folder (holds masks/ebhi_seg)")  # fmt: skip
    parser.add_argument("--out", default=None, help="output folder (default: the packaged one)")
    parser.add_argument("--epochs", type=whole, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=whole, default=1)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from workbench._errors import WorkbenchError
    from workbench.datasets import EBHI_CLASSES, ebhi_images
    from workbench.models._tissue_cnn import WEIGHTS_DIR, save_tissue_net, train_tissue_net

    torch.set_num_threads(args.threads)
    try:
        train = ebhi_images(args.data, split="train")
        val = ebhi_images(args.data, split="val")
    except WorkbenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not train:
        print(f"error: no EBHI-Seg training images under {args.data!r}", file=sys.stderr)
        return 2
    classes = list(EBHI_CLASSES)
    t0 = time.time()
    try:
        train_x, val_x = _load(train), _load(val)
    except WorkbenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    net, log = train_tissue_net(
        train_x,
        np.array([classes.index(im.cls) for im in train]),
        classes=classes,
        val_images=val_x,
        val_labels=np.array([classes.index(im.cls) for im in val]),
        epochs=args.epochs,
        seed=args.seed,
        progress=not args.no_progress,
    )
    record = {
        "classes": classes,
        "input_size": 192,
        "mpp": 0.9,
        "trained_on": "EBHI-Seg images of the 'train' cases (workbench.datasets.ebhi_case_split)",
        "n_train_images": len(train),
        "n_train_cases": len({im.case_id for im in train}),
        "n_val_images": len(val),
        "epochs": args.epochs,
        "seed": args.seed,
        "recipe": "AdamW wd 1e-3, one-cycle lr 2e-3, batch 32, random 192 px crops of the "
        "224 px images, flips, quarter turns, optical-density stain jitter; 5-class cross-entropy",
        "log": log,
        "wall_seconds": round(time.time() - t0, 1),
        "threads": args.threads,
        "command": "python -m workbench.train_tile_encoder " + " ".join(argv or sys.argv[1:]),
    }
    out = Path(args.out) if args.out else WEIGHTS_DIR
    save_tissue_net(net, out, record=record)
    print(f"wrote {out} (val accuracy {log[-1].get('val_accuracy', float('nan')):.3f})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
