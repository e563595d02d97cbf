"""One synthetic H&E slide: a real pyramidal JPEG TIFF plus what is known to be in it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workbench.datasets._layout import LAYOUT_DOWNSAMPLE, build_layout

#: Named slide sizes ``(width, height)`` in level-0 pixels at 0.5 µm/px.
SIZES: dict[str, tuple[int, int]] = {
    "tiny": (4096, 3072),
    "demo": (8192, 6144),
    "large": (40960, 40960),
}

#: Microns per pixel at level 0 of every synthetic slide.
MPP = 0.5
#: Objective power written to the Aperio header (20x ~ 0.5 µm/px).
OBJECTIVE_POWER = 20
_VENDORS = ("aperio", "generic-tiff")


@dataclass(frozen=True)
class SlideTruth:
    """What was planted in one synthetic slide.

    Returned by :func:`make_slide` and :func:`slide_truth`; each parameter is kept as the
    attribute of the same name.

    Parameters
    ----------
    path
        The TIFF file.
    dimensions
        ``(width, height)`` of level 0.
    level_count
        Number of pyramid levels (pages) written.
    mpp
        Microns per pixel at level 0.
    grade
        Lesion grade (1-3) that shaped lesion outlines and nuclei.
    infiltration
        Planted immune density in the lesion boundary band (0-1, the generator's input).
    infiltration_score
        Expected immune cells per mm² in the boundary band, measured on the layout.
    necrosis_fraction
        Share of the tissue that is necrotic (the decoy).
    lesion_fraction
        Share of the tissue inside lesions.
    tissue_fraction
        Share of the slide covered by tissue.
    seed
        Seed the slide was drawn from.
    lesion_mask
        Boolean lesion mask at ``mask_downsample`` (``(row, col)``; pixel ``(r, c)`` covers
        level-0 ``x`` in ``[c * d, (c + 1) * d)``).
    mask_downsample
        Level-0 pixels per mask pixel.
    """

    path: Path
    dimensions: tuple[int, int]
    level_count: int
    mpp: float
    grade: int
    infiltration: float
    infiltration_score: float
    necrosis_fraction: float
    lesion_fraction: float
    tissue_fraction: float
    seed: int
    lesion_mask: np.ndarray = field(repr=False)
    mask_downsample: int = LAYOUT_DOWNSAMPLE

    def to_dict(self) -> dict:
        """Plain-JSON numbers (no mask).

        Returns
        -------
        dict
            Every field but ``lesion_mask``, with ``dimensions`` as ``width`` and ``height``
            and the path as a string.
        """
        return {
            "path": str(self.path),
            "width": self.dimensions[0],
            "height": self.dimensions[1],
            "level_count": self.level_count,
            "mpp": self.mpp,
            "grade": self.grade,
            "infiltration": self.infiltration,
            "infiltration_score": self.infiltration_score,
            "necrosis_fraction": self.necrosis_fraction,
            "lesion_fraction": self.lesion_fraction,
            "tissue_fraction": self.tissue_fraction,
            "seed": self.seed,
            "mask_downsample": self.mask_downsample,
        }


def resolve_size(size: str | tuple[int, int]) -> tuple[int, int]:
    """``(width, height)`` of a named size or an explicit pair; raises on anything else."""
    if isinstance(size, str):
        if size not in SIZES:
            raise ValueError(
                f"unknown slide size {size!r}; use one of {sorted(SIZES)} or a (width, height) pair"
            )
        return SIZES[size]
    try:
        width, height = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(
            f"size must be one of {sorted(SIZES)} or a (width, height) pair, got {size!r}"
        ) from None
    if width < 512 or height < 512:
        raise ValueError(
            f"a synthetic slide needs at least 512 x 512 pixels, got {width} x {height}"
        )
    return width, height


def _check_inputs(grade: int, infiltration: float, vendor: str, grade_cue: str = "both") -> None:
    from workbench.datasets._render import GRADE_CUES

    if grade_cue not in GRADE_CUES:
        raise ValueError(f"grade_cue must be one of {GRADE_CUES}, got {grade_cue!r}")
    if grade not in (1, 2, 3):
        raise ValueError(f"grade must be 1, 2 or 3, got {grade!r}")
    if not 0.0 <= float(infiltration) <= 1.0:
        raise ValueError(f"infiltration must lie in [0, 1], got {infiltration!r}")
    if vendor not in _VENDORS:
        raise ValueError(f"vendor must be one of {_VENDORS}, got {vendor!r}")


def slide_truth(
    path: str | os.PathLike,
    *,
    size: str | tuple[int, int] = "tiny",
    grade: int,
    infiltration: float,
    seed: int,
    decoy: bool = True,
    tile: int = 256,
    grade_cue: str = "both",
    stain: dict | None = None,
) -> SlideTruth:
    """The ground truth :func:`make_slide` would plant, without drawing any pixels.

    Cheap at any size: only the coarse layout is built. The parameters mean what they mean
    for :func:`make_slide` (the ones that only change how pixels are stored are left out).

    Parameters
    ----------
    path
        The TIFF the slide would be written to (recorded in the result only).
    size
        ``"tiny"``, ``"demo"``, ``"large"`` or ``(width, height)``.
    grade
        Lesion grade, 1 to 3.
    infiltration
        Immune density in the lesion boundary band, 0 to 1.
    seed
        Seed of everything random in the slide.
    decoy
        Plant necrotic patches.
    tile
        TIFF tile side (sets the number of pyramid levels).
    grade_cue
        ``"both"`` or ``"detail"`` (see :func:`make_slide`).
    stain
        A site's staining, ``None`` for the standard stain.

    Returns
    -------
    SlideTruth
        What :func:`make_slide` with the same arguments returns.
    """
    from workbench.datasets._pyramid import level_shapes

    width, height = resolve_size(size)
    _check_inputs(grade, infiltration, "aperio", grade_cue)
    layout = build_layout(
        width, height, grade=grade, infiltration=infiltration, seed=seed, mpp=MPP, decoy=decoy,
        grade_cue=grade_cue, stain=stain,
    )  # fmt: skip
    return _truth(Path(path), layout, len(level_shapes(width, height, tile)), seed)


def _truth(path: Path, layout, level_count: int, seed: int) -> SlideTruth:
    return SlideTruth(
        path=path,
        dimensions=(layout.width, layout.height),
        level_count=level_count,
        mpp=layout.mpp,
        grade=layout.grade,
        infiltration=layout.infiltration,
        infiltration_score=layout.infiltration_score(),
        necrosis_fraction=layout.necrosis_fraction(),
        lesion_fraction=layout.lesion_fraction(),
        tissue_fraction=layout.tissue_fraction(),
        seed=int(seed),
        lesion_mask=layout.lesion_mask.copy(),
        mask_downsample=layout.downsample,
    )


def make_slide(
    path: str | os.PathLike,
    *,
    size: str | tuple[int, int] = "tiny",
    grade: int,
    infiltration: float,
    seed: int,
    decoy: bool = True,
    vendor: str = "aperio",
    tile: int = 256,
    quality: int = 85,
    progress: bool = False,
    grade_cue: str = "both",
    stain: dict | None = None,
) -> SlideTruth:
    """Write one synthetic H&E slide as a pyramidal tiled JPEG TIFF that OpenSlide opens.

    The slide shows tissue islands on white glass, pink fibrous stroma with scattered
    fibroblasts, one or more lesions whose outline and nuclei follow ``grade``, a patchy band
    of lymphocytes around each lesion whose density follows ``infiltration``, and (with
    ``decoy``) pale necrotic patches with nuclear debris. Level 0 is 0.5 µm/px; each further
    level halves the previous one until the long side fits in one tile.

    The same arguments give byte-identical files. The file is written atomically.

    Parameters
    ----------
    path
        Where to write the TIFF (``.tif``/``.tiff``/``.svs``).
    size
        ``"tiny"`` (4096 x 3072), ``"demo"`` (8192 x 6144), ``"large"`` (40960 x 40960) or an
        explicit ``(width, height)``.
    grade
        1 (few small round lesions, small regular nuclei) to 3 (large infiltrative lesions,
        crowded, large, dark, irregular nuclei with nucleoli).
    infiltration
        Immune density in the lesion boundary band, 0 (none) to 1 (dense).
    seed
        Seed of everything random in the slide.
    decoy
        Draw necrotic patches (which carry no outcome signal).
    vendor
        ``"aperio"`` writes an Aperio-style ImageDescription (OpenSlide vendor ``aperio``
        with MPP and AppMag); ``"generic-tiff"`` writes only resolution tags.
    tile, quality
        TIFF tile side and JPEG quality.
    progress
        Show a tqdm bar over level-0 tiles.
    grade_cue
        ``"both"``: grade shapes the lesions (size, count, outline) and the nuclei, so it
        shows on the thumbnail. ``"detail"``: lesions are drawn independently of grade (the
        same seed gives the same lesions at every grade) and grade shows only in the nuclei
        (size variation, irregular outlines, nucleoli, mitoses) at <= 1 µm/px; a lesion's
        colour and texture on a thumbnail are the same at every grade.
    stain
        A site's staining: ``{"vectors": (2, 3) H and E optical-density colours,
        "scale": (h, e) strengths}``; ``None`` = the standard stain.

    Returns
    -------
    SlideTruth
        The planted grade, infiltration score, necrosis fraction and lesion mask.
    """
    from workbench.datasets._pyramid import write_pyramid
    from workbench.datasets._render import SlideRenderer
    from workbench.io import atomic_path

    width, height = resolve_size(size)
    _check_inputs(grade, infiltration, vendor, grade_cue)
    path = Path(path)
    layout = build_layout(
        width, height, grade=grade, infiltration=infiltration, seed=seed, mpp=MPP, decoy=decoy,
        grade_cue=grade_cue, stain=stain,
    )  # fmt: skip
    renderer = SlideRenderer(layout)
    description = None
    if vendor == "aperio":
        description = (
            f"Aperio Image Library v12.0.0 \r\n{width}x{height} [0,0 {width}x{height}] "
            f"({tile}x{tile}) JPEG/RGB Q={quality}|AppMag = {OBJECTIVE_POWER}|MPP = {MPP}"
            "|Workbench = synthetic"  # never the grade: a model must not read it from metadata
        )
    with atomic_path(path) as tmp:
        shapes = write_pyramid(
            tmp,
            width=width,
            height=height,
            render=renderer.render,
            mpp=MPP,
            description=description,
            tile=tile,
            chunk=4 * tile,
            quality=quality,
            progress=progress,
            desc=path.name,
        )
    return _truth(path, layout, len(shapes), seed)
