"""Train the packaged click network: ``python -m workbench.train_clicknet --preset indomain``.

RITM-style iterative training (the loop: :func:`workbench.models.train_click_segmenter`) of a :class:`~workbench.models.ClickSegmenter` whose inputs are
the view, positive/negative click disks and the previous mask. For every batch a few
random clicks are drawn (the first at the object's centre half of the time, as the
benchmark's simulated user does), then 0–3 rounds of the network's own prediction followed
by a corrective click from the benchmark's click simulator, the prediction becoming the next
round's previous mask; the loss (BCE + soft Dice, click disks weighted up) is taken on the
last round.

Data (:class:`workbench.datasets.ClickTrainingSampler`): crops of the shared real region pairs,
object-centred views of single nuclei from the nucleus sets, composites of real textures
(shared tiles and the inside/outside of real masks), procedural views and a synthetic cohort
(seed 7; the benchmark's cohort uses seed 2024). All at the engine's working resolution, with
strong stain (HED), colour, scale, flip and rotation augmentation.

Presets (``--preset``):

``pretrain``
    no real pair at all: tile composites, procedural and cohort views. Shared by every fold.
``fold:<set>``
    leave-one-dataset-out: every real set except ``<set>`` (their ``val`` part held out for
    choosing settings), starting from the pretrained weights.
``indomain`` (the default)
    the ``train`` part of every real set (each set's ``test`` part is never seen; for
    EBHI-Seg only its ``fit`` part, its ``val`` cases being kept for choosing settings),
    starting from the pretrained weights (``--init packaged``: from the packaged network):
    the packaged network.

Every preset with real pairs holds the EBHI-Seg cases with a serrated-adenoma image out
altogether (``ebhi_serrated``: the leave-one-class-out check); EBHI-Seg masks are many
glands each and train as one target (``gland`` samples, zoom 0.65-3x of the 224 px images).

``--out`` is a checkpoint folder (:func:`workbench.models.save_checkpoint`); for ``indomain`` it
defaults to the packaged network's (:data:`workbench.models.CLICK_SEGMENTER`), so a rerun
replaces the packaged weights. A user's mistake ends in one line on stderr and exit code 2.

The whole schedule runs on CPU, one thread: ``pretrain`` (1,500 iterations) in 6–11 min and
each of the others (3,000 iterations by default) in 17–25 min, depending on the machine's load.
The run is seeded: on one thread, in the same environment, a rerun gives the same weights (a
rebuilt environment with other library versions need not; two such runs of one fold differed
by about 0.7 clicks NoC@85 in the benchmark).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from workbench._argtypes import whole
from workbench.datasets import GLAND_DATASETS, REAL_DATASETS

__all__ = ["CLICKNET_PRESETS", "DEFAULT_PRETRAIN", "main", "preset_config", "train_preset"]

#: The ``--preset`` choices (``fold:<set>`` names held-out real sets joined by ``+``).
CLICKNET_PRESETS = ("pretrain", "indomain", "fold:<set>")
#: Where the fine-tuning presets find ``pretrain``'s checkpoint folder by default.
DEFAULT_PRETRAIN = Path("data/generated/interactive/pretrain")
_DEFAULT_ITERATIONS = {"pretrain": 1500, "finetune": 3000}
_SCRIPT = "python -m workbench.train_clicknet"


def _default_root() -> str:
    return os.environ.get("WORKBENCH_REAL_DATA") or str(
        Path(__file__).resolve().parents[1].parent / "shared" / "data"
    )


def preset_config(preset: str) -> dict:
    """The data and schedule of a preset.

    Parameters
    ----------
    preset
        ``pretrain``, ``indomain`` or ``fold:<set>[+<set>...]``.

    Returns
    -------
    dict
        ``datasets``, ``split``, ``splits`` (per-set exceptions), source ``weights``, ``init``
        (``None`` or ``"pretrain"``), ``iterations``, ``lr``, ``crop``, ``large_shapes``,
        ``first_click_share``, ``texture_zoom`` and ``gland_zoom``.

    Raises
    ------
    SystemExit
        An unknown preset or held-out set (the message lists the choices).
    """

    if preset == "pretrain":
        return {
            "datasets": (),
            "split": "train",
            "weights": {"tiles": 0.7, "procedural": 0.2, "cohort": 0.1},
            "init": None,
            "iterations": _DEFAULT_ITERATIONS["pretrain"],
            "lr": 2e-3,
            "crop": 192,
            "large_shapes": False,
            "first_click_share": 0.0,
            "texture_zoom": (0.8, 2.0),
            "splits": {},
            "gland_zoom": (0.65, 3.0),
        }
    weights = {
        "region": 0.2,
        "gland": 0.3,
        "nucleus": 0.12,
        "tiles": 0.13,
        "real_texture": 0.13,
        "procedural": 0.07,
        "cohort": 0.05,
    }
    splits: dict[str, str] = {}
    if preset == "indomain":
        datasets, split = REAL_DATASETS, "train"
        splits = {d: "fit" for d in GLAND_DATASETS}
    elif preset.startswith("fold:"):
        held = preset.split(":", 1)[1].split("+")
        unknown = [h for h in held if h not in REAL_DATASETS]
        if unknown or not held:
            raise SystemExit(
                f"unknown fold {preset!r}; name held-out sets from {', '.join(REAL_DATASETS)} "
                "joined by '+' (e.g. fold:ocdc or fold:monusac+monuseg+tnbc)"
            )
        datasets, split = tuple(d for d in REAL_DATASETS if d not in held), "not_val"
    else:
        raise SystemExit(f"unknown preset {preset!r}; choose one of {', '.join(CLICKNET_PRESETS)}")
    return {
        "datasets": datasets,
        "split": split,
        "splits": splits,
        "weights": weights,
        "init": "pretrain",
        "iterations": _DEFAULT_ITERATIONS["finetune"],
        "lr": 1e-3,
        "crop": 224,
        "large_shapes": True,
        "first_click_share": 0.35,
        "texture_zoom": (0.5, 2.0),
        "gland_zoom": (0.65, 3.0),
    }


def _cohort_views(root: Path, n_patients: int) -> list:
    from workbench.datasets import cohort_views

    views = []
    for fill in (0.35, 0.6, 0.9):
        views += cohort_views(root, n_patients=n_patients, seed=7, fill=fill)
    return views


def train_preset(
    *,
    preset: str,
    out: str | os.PathLike,
    real_root: str | os.PathLike | None = None,
    init: str | os.PathLike | None = None,
    iterations: int | None = None,
    batch: int = 8,
    crop: int | None = None,
    lr: float | None = None,
    seed: int = 0,
    cohort_root: str | os.PathLike | None = None,
    cohort_patients: int = 8,
    log_every: int = 50,
    threads: int = 1,
) -> dict:
    """Train the click network with ``preset`` and save it as a checkpoint folder at ``out``.

    Parameters
    ----------
    preset
        ``pretrain``, ``indomain`` or ``fold:<set>[+<set>...]`` (:func:`preset_config`).
    out
        Checkpoint folder to write; the record goes into its ``extra["training"]``.
    real_root
        The shared real data (``masks/``, ``tiles/``); every preset but ``pretrain`` needs it.
    init
        A checkpoint folder to start from, ``"packaged"`` or ``"none"``; by default
        :data:`DEFAULT_PRETRAIN` for the presets that fine-tune.
    iterations, batch, crop, lr
        Schedule; ``None`` takes the preset's value.
    seed
        Seeds the sampler's draws, the clicks and torch.
    cohort_root, cohort_patients
        Where the synthetic training cohort is generated (seed 7), and its size (0: none).
    log_every
        Iterations between log lines.
    threads
        torch threads (1 makes a rerun give the same weights).

    Returns
    -------
    dict
        The training record (script, preset, data, augmentation, schedule, loss history,
        CPU seconds), as saved in the checkpoint.
    """
    from workbench.datasets import EBHI_HOLDOUT, ClickTrainingSampler
    from workbench.models import CLICK_SEGMENTER, train_click_segmenter

    cpu0, wall0 = time.process_time(), time.perf_counter()
    cfg = preset_config(preset)
    iterations = int(cfg["iterations"] if iterations is None else iterations)
    if iterations < 1 or batch < 1:
        raise SystemExit(f"iterations and batch must be at least 1, got {iterations} and {batch}")
    lr = float(lr or cfg["lr"])
    crop = int(crop or cfg["crop"])
    cohort = []
    if cfg["weights"].get("cohort", 0) > 0 and cohort_patients:
        root = Path(cohort_root) if cohort_root else Path("data/generated/train_cohort")
        cohort = _cohort_views(root, cohort_patients)
    if cfg["datasets"] and (real_root is None or not Path(real_root, "masks").is_dir()):
        raise SystemExit(f"preset {preset!r} needs the shared real data; pass --real-root")
    sampler = ClickTrainingSampler(
        real_root=real_root if real_root and Path(real_root).is_dir() else None,
        datasets=cfg["datasets"],
        split=cfg["split"],
        splits=cfg["splits"],
        weights=cfg["weights"],
        crop=crop,
        cohort_views=cohort,
        large_shapes=cfg["large_shapes"],
        texture_zoom=cfg["texture_zoom"],
        gland_zoom=cfg["gland_zoom"],
    )
    if cfg["init"] is None or (init is not None and str(init) == "none"):
        init_path = None
    elif init is not None and str(init) == "packaged":
        init_path = CLICK_SEGMENTER
    else:
        init_path = Path(init) if init else DEFAULT_PRETRAIN
    record = {
        "script": _SCRIPT,
        "preset": preset,
        "composite_shapes": "large" if cfg["large_shapes"] else "pretrain (smaller)",
        "augmentation": (
            "rot90/flip, free rotation (p 0.25), HED stain jitter sigma 0.2 bias 0.05 (p 0.85), "
            "saturation/contrast/brightness/gamma (p 0.6), blur (p 0.2), noise (p 0.3), "
            "zoom 0.55-1.4 (real region crops), "
            f"{cfg['gland_zoom'][0]:g}-{cfg['gland_zoom'][1]:g} of the image's own pixels "
            "(EBHI-Seg gland crops, mirrored out below 1x), texture zoom "
            f"{cfg['texture_zoom'][0]:g}-{cfg['texture_zoom'][1]:g} (tile composites)"
        ),
        "data": {
            "datasets": list(cfg["datasets"]),
            "split": cfg["split"],
            "splits": dict(cfg["splits"]),
            "held_out": (
                {"ebhi": f"every case with a {', '.join(EBHI_HOLDOUT)} image"}
                if "ebhi" in cfg["datasets"]
                else {}
            ),
            "pairs": {k: v for k, v in sampler.counts.items()},
            "weights": sampler.weights,
            "cohort": (
                f"make_cohort(n_patients={cohort_patients}, size='tiny', seed=7), 3 zooms"
                if cohort
                else None
            ),
        },
    }
    return train_click_segmenter(
        sampler,
        out=out,
        iterations=iterations,
        crop=crop,
        lr=lr,
        batch=batch,
        seed=seed,
        init=init_path,
        first_click_share=cfg["first_click_share"],
        log_every=log_every,
        threads=threads,
        label=preset,
        record=record,
        started=(cpu0, wall0),
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m workbench.train_clicknet", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--preset", default="indomain", help=f"one of {', '.join(CLICKNET_PRESETS)}"
    )
    parser.add_argument(
        "--out",
        default=None,
        help="checkpoint folder (default for indomain: the packaged network's folder)",
    )
    parser.add_argument(
        "--init",
        default=None,
        help=f"checkpoint folder to start from, 'packaged' or 'none' (default: {DEFAULT_PRETRAIN})",
    )
    parser.add_argument("--iterations", type=whole(1), default=None)
    parser.add_argument("--batch", type=whole(1), default=8)
    parser.add_argument("--crop", type=whole(32), default=None, help="192 (pretrain) / 224")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=whole(1), default=1)
    parser.add_argument("--real-root", default=_default_root())
    parser.add_argument("--cohort-root", default=None)
    parser.add_argument(
        "--cohort-patients", type=whole(0), default=8, help="synthetic cohort size (0: none)"
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    """Parse ``argv``, train, and print the training record (without the loss history).

    Parameters
    ----------
    argv
        Command-line arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    None
        The checkpoint is written to ``--out``; the record is printed as one JSON line.
    """
    from workbench import WorkbenchError
    from workbench.models import CLICK_SEGMENTER

    parser = _parser()
    args = parser.parse_args(argv)
    out = args.out
    if out is None:
        if args.preset != "indomain":
            raise SystemExit("--out is required for presets other than indomain")
        out = CLICK_SEGMENTER
    try:
        record = train_preset(
            preset=args.preset,
            out=out,
            real_root=args.real_root,
            init=args.init,
            iterations=args.iterations,
            batch=args.batch,
            crop=args.crop,
            lr=args.lr,
            seed=args.seed,
            threads=args.threads,
            cohort_root=args.cohort_root,
            cohort_patients=args.cohort_patients,
        )
    except WorkbenchError as exc:  # e.g. --init names no checkpoint: one line, exit 2
        parser.error(str(exc))
    print(json.dumps({k: v for k, v in record.items() if k != "loss_history"}))


if __name__ == "__main__":
    main()
