"""The coarse plan of one synthetic slide: where tissue, lesions, infiltrates and necrosis lie.

Everything here lives on a grid of ``LAYOUT_DOWNSAMPLE`` level-0 pixels per cell (8 µm at
0.5 µm/px), small enough to hold in memory for the largest slide. The renderer reads these
maps back by bilinear interpolation, so a pixel's appearance depends only on its global
position and the slide's seed: tiles can be drawn in any order and still join up.

Signed distance fields (positive inside, in layout pixels) describe the tissue, lesion and
necrosis outlines; thresholding them at zero gives the ground-truth masks, and a narrow
smooth step around zero gives soft, anti-aliased edges at full resolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Level-0 pixels per layout cell; also the downsample of the lesion mask PNG.
LAYOUT_DOWNSAMPLE = 16

#: Width of the boundary band (µm) in which immune cells gather around a lesion.
BAND_WIDTH_UM = 60.0

#: Spacing (level-0 pixels) of the small-cell grid that carries lymphocytes and debris.
SMALL_CELL = 16

# Lesion morphology per grade: count range, radius as a fraction of the slide's short side,
# axis ratio range, low/high frequency outline roughness and satellite nest count range.
_LESION_SHAPES = {
    1: {"n": (1, 2), "r": (0.045, 0.065), "ratio": (1.0, 1.25), "low": 0.08, "high": 0.0,
        "sat": (0, 0)},
    2: {"n": (1, 2), "r": (0.07, 0.095), "ratio": (1.0, 1.5), "low": 0.2, "high": 0.12,
        "sat": (0, 2)},
    3: {"n": (2, 2), "r": (0.10, 0.135), "ratio": (1.1, 1.8), "low": 0.3, "high": 0.3,
        "sat": (3, 6)},
}  # fmt: skip

#: ``grade_cue="detail"``: one lesion morphology for every grade (count, size, axis ratio,
#: outline roughness and satellites are drawn from these ranges whatever the grade).
_DETAIL_SHAPE = {"n": (1, 2), "r": (0.07, 0.115), "ratio": (1.0, 1.6), "low": (0.08, 0.3),
                 "high": (0.0, 0.3), "sat": (0, 4)}  # fmt: skip


@dataclass
class Layout:
    """Coarse maps of one slide (arrays are ``(row, col)`` on the layout grid)."""

    width: int
    height: int
    mpp: float
    grade: int
    infiltration: float
    cell_seed: int
    texture_seed: int
    tissue_sdf: np.ndarray
    lesion_sdf: np.ndarray
    necrosis_sdf: np.ndarray
    immune: np.ndarray
    cos2a: np.ndarray
    sin2a: np.ndarray
    tissue_mask: np.ndarray
    lesion_mask: np.ndarray
    necrosis_mask: np.ndarray
    band_mask: np.ndarray
    stain_scale: tuple[float, float]
    downsample: int = LAYOUT_DOWNSAMPLE
    grade_cue: str = "both"
    #: ``(2, 3)`` optical-density colours of haematoxylin and eosin (a site's stain), or
    #: ``None`` for the generator's standard H&E.
    stain_vectors: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.tissue_sdf.shape

    def infiltration_score(self) -> float:
        """Expected immune cells per mm² in the lesion boundary band (the planted marker)."""
        if not self.band_mask.any():
            return 0.0
        cell_um = SMALL_CELL * self.mpp
        per_mm2 = 1e6 / (cell_um * cell_um)
        return float(self.immune[self.band_mask].mean() * per_mm2)

    def necrosis_fraction(self) -> float:
        """Share of the tissue area covered by necrosis (the decoy)."""
        tissue = self.tissue_mask.sum()
        return float(self.necrosis_mask.sum() / tissue) if tissue else 0.0

    def lesion_fraction(self) -> float:
        """Share of the tissue area inside lesions."""
        tissue = self.tissue_mask.sum()
        return float(self.lesion_mask.sum() / tissue) if tissue else 0.0

    def tissue_fraction(self) -> float:
        """Share of the slide covered by tissue."""
        return float(self.tissue_mask.mean())


def _noise(rng: np.random.Generator, shape: tuple[int, int], features: float) -> np.ndarray:
    """Smooth noise with unit spread and about ``features`` bumps along the short side."""
    from skimage.transform import resize

    h, w = shape
    short = min(h, w)
    gh = max(4, math.ceil(features * h / short) + 3)
    gw = max(4, math.ceil(features * w / short) + 3)
    coarse = rng.standard_normal((gh, gw))
    up = resize(coarse, shape, order=3, mode="reflect", anti_aliasing=False)
    up = up - up.mean()
    sd = up.std()
    return (up / sd if sd > 0 else up).astype(np.float32)


def _signed_distance(mask: np.ndarray) -> np.ndarray:
    """Signed distance (layout pixels, positive inside), lightly smoothed to round corners."""
    from scipy import ndimage

    if not mask.any():
        return np.full(mask.shape, -100.0, dtype=np.float32)
    inside = ndimage.distance_transform_edt(mask)
    outside = ndimage.distance_transform_edt(~mask)
    sdf = np.where(mask, inside - 0.5, 0.5 - outside)
    return ndimage.gaussian_filter(sdf, 0.8).astype(np.float32)


def _drop_small(mask: np.ndarray, max_size: int) -> np.ndarray:
    """Remove connected components of ``max_size`` cells or fewer."""
    from scipy import ndimage

    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes > max_size
    keep[0] = False
    return keep[labels]


def _ellipse_q(xx, yy, cx, cy, rx, ry, angle):
    c, s = math.cos(angle), math.sin(angle)
    u = (xx - cx) * c + (yy - cy) * s
    v = -(xx - cx) * s + (yy - cy) * c
    return np.sqrt((u / rx) ** 2 + (v / ry) ** 2)


def _pick_centre(rng, allowed: np.ndarray, score: np.ndarray) -> tuple[float, float]:
    """A random allowed cell (or the best-scoring one when none is allowed), as (x, y)."""
    idx = np.flatnonzero(allowed.ravel())
    if idx.size == 0:
        idx = np.array([int(np.argmax(score))])
    k = int(idx[rng.integers(idx.size)])
    r, c = divmod(k, allowed.shape[1])
    return float(c) + 0.5, float(r) + 0.5


def build_layout(
    width: int,
    height: int,
    *,
    grade: int,
    infiltration: float,
    seed: int,
    mpp: float = 0.5,
    decoy: bool = True,
    grade_cue: str = "both",
    stain: dict | None = None,
) -> Layout:
    """Draw the coarse plan of a slide of ``width`` x ``height`` level-0 pixels.

    Separate random streams feed the tissue, the lesions, the infiltrate, the necrosis and
    the stain, so the decoy (necrosis) is drawn independently of grade and infiltration.
    With ``grade_cue="detail"`` the lesion stream does not look at the grade at all: the
    same seed gives the same lesions at every grade. ``stain`` (a site's ``vectors``, a
    ``(2, 3)`` H and E optical-density matrix, and ``scale``, its two strengths) tints the
    slide like another lab's staining.
    """
    from scipy import ndimage

    ds = LAYOUT_DOWNSAMPLE
    hl, wl = math.ceil(height / ds), math.ceil(width / ds)
    short = min(hl, wl)
    streams = np.random.SeedSequence([int(seed), 0x51DE]).spawn(7)
    rng_tissue, rng_lesion, rng_immune, rng_necrosis, rng_stain, rng_misc = (
        np.random.default_rng(s) for s in streams[:6]
    )
    cell_seed = int(streams[6].generate_state(1, dtype=np.uint64)[0])
    texture_seed = int(rng_misc.integers(2**31))
    yy, xx = np.mgrid[0:hl, 0:wl].astype(np.float32) + 0.5

    # --- tissue islands: noisy ellipses, one per cell of a coarse grid ----------------------
    n_islands = int(rng_tissue.integers(2, 5))
    cols = math.ceil(math.sqrt(n_islands * wl / hl))
    rows = math.ceil(n_islands / cols)
    cells = np.sort(rng_tissue.choice(rows * cols, size=n_islands, replace=False))
    cw, ch = wl / cols, hl / rows
    rough = _noise(rng_tissue, (hl, wl), 3.0 * max(rows, cols))
    field = np.full((hl, wl), -np.inf, dtype=np.float32)
    for cell in cells:
        r, c = divmod(int(cell), cols)
        cx = (c + 0.5 + rng_tissue.uniform(-0.08, 0.08)) * cw
        cy = (r + 0.5 + rng_tissue.uniform(-0.08, 0.08)) * ch
        rx = cw * rng_tissue.uniform(0.3, 0.4)
        ry = ch * rng_tissue.uniform(0.3, 0.4)
        q = _ellipse_q(xx, yy, cx, cy, rx, ry, rng_tissue.uniform(0, math.pi))
        field = np.maximum(field, 1.0 - q + 0.3 * rough)
    tissue = field > 0
    margin = max(2, round(0.02 * short))
    tissue[:margin] = tissue[-margin:] = False
    tissue[:, :margin] = tissue[:, -margin:] = False
    tissue = _drop_small(tissue, max(4, int(0.002 * hl * wl)))
    tissue_depth = ndimage.distance_transform_edt(tissue)

    # --- lesions: round and few at grade 1, large and infiltrative at grade 3 ----------------
    if grade_cue == "detail":
        shape = dict(_DETAIL_SHAPE)
        shape["low"] = float(rng_lesion.uniform(*shape["low"]))
        shape["high"] = float(rng_lesion.uniform(*shape["high"]))
    else:
        shape = _LESION_SHAPES[int(grade)]
    n_lesions = int(rng_lesion.integers(shape["n"][0], shape["n"][1] + 1))
    lesion_field = np.full((hl, wl), -np.inf, dtype=np.float32)
    taken = np.zeros((hl, wl), dtype=bool)
    for _ in range(n_lesions):
        radius = rng_lesion.uniform(*shape["r"]) * short
        ratio = rng_lesion.uniform(*shape["ratio"])
        rx, ry = radius * math.sqrt(ratio), radius / math.sqrt(ratio)
        allowed = (tissue_depth > 0.9 * max(rx, ry)) & ~taken
        cx, cy = _pick_centre(rng_lesion, allowed, tissue_depth * ~taken)
        angle = rng_lesion.uniform(0, math.pi)
        low = _noise(rng_lesion, (hl, wl), 1.2 * short / radius)
        high = _noise(rng_lesion, (hl, wl), 3.5 * short / radius)
        q = _ellipse_q(xx, yy, cx, cy, rx, ry, angle)
        blob = 1.0 - q + shape["low"] * low + shape["high"] * high
        blob[q > 1.8] = -1.0
        lesion_field = np.maximum(lesion_field, blob)
        n_sat = int(rng_lesion.integers(shape["sat"][0], shape["sat"][1] + 1))
        for _ in range(n_sat):
            theta = rng_lesion.uniform(0, 2 * math.pi)
            dist = radius * rng_lesion.uniform(1.05, 1.45)
            rs = radius * rng_lesion.uniform(0.1, 0.22)
            sq = _ellipse_q(
                xx, yy, cx + dist * math.cos(theta), cy + dist * math.sin(theta), rs, rs, 0.0
            )
            lesion_field = np.maximum(lesion_field, 1.0 - sq + 0.25 * high)
        taken |= _ellipse_q(xx, yy, cx, cy, 2 * rx, 2 * ry, angle) < 1.2
    lesion = (lesion_field > 0) & ndimage.binary_erosion(tissue, iterations=1)
    lesion = _drop_small(lesion, 2)
    if not lesion.any():  # a degenerate tiny slide: keep one lesion cell at the deepest point
        r, c = np.unravel_index(int(np.argmax(tissue_depth)), tissue.shape)
        lesion[r, c] = True

    # --- immune infiltrate: a patchy band around each lesion boundary ----------------------
    band_px = BAND_WIDTH_UM / (mpp * ds)
    d_out = ndimage.distance_transform_edt(~lesion)
    d_in = ndimage.distance_transform_edt(lesion)
    profile = np.where(
        lesion, np.exp(-0.5 * (d_in / (0.5 * band_px)) ** 2), np.exp(-0.5 * (d_out / band_px) ** 2)
    )
    patches = np.clip(1.0 + 0.5 * _noise(rng_immune, (hl, wl), 10.0), 0.25, 1.75)
    immune = np.clip(float(infiltration) * profile * patches, 0.0, 0.95) * tissue
    band = tissue & np.where(lesion, d_in <= 0.75 * band_px, d_out <= 1.5 * band_px)

    # --- necrosis (decoy): pale patches anywhere in tissue, outside lesions -----------------
    necrosis = np.zeros((hl, wl), dtype=bool)
    n_patches = int(rng_necrosis.integers(0, 4)) if decoy else 0
    if n_patches:
        smudge = _noise(rng_necrosis, (hl, wl), 8.0)
        for _ in range(n_patches):
            radius = rng_necrosis.uniform(0.03, 0.07) * short
            allowed = (tissue_depth > 0.6 * radius) & (d_out > radius + band_px)
            cx, cy = _pick_centre(rng_necrosis, allowed, tissue_depth)
            q = _ellipse_q(xx, yy, cx, cy, radius, radius * rng_necrosis.uniform(0.6, 1.0),
                           rng_necrosis.uniform(0, math.pi))  # fmt: skip
            necrosis |= (1.0 - q + 0.25 * smudge) > 0
        necrosis &= tissue & ~lesion

    # --- stroma fibre direction and per-slide stain strength --------------------------------
    angle = math.pi * _noise(rng_misc, (hl, wl), 4.0)
    stain_scale = (
        float(np.exp(rng_stain.normal(0, 0.07))),
        float(np.exp(rng_stain.normal(0, 0.07))),
    )
    vectors = None
    if stain is not None:
        vectors = np.asarray(stain["vectors"], dtype=np.float32).reshape(2, 3)
        vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        sh, se = (float(v) for v in stain.get("scale", (1.0, 1.0)))
        stain_scale = (stain_scale[0] * sh, stain_scale[1] * se)

    return Layout(
        width=int(width),
        height=int(height),
        mpp=float(mpp),
        grade=int(grade),
        infiltration=float(infiltration),
        cell_seed=cell_seed,
        texture_seed=texture_seed,
        tissue_sdf=_signed_distance(tissue),
        lesion_sdf=_signed_distance(lesion),
        necrosis_sdf=_signed_distance(necrosis),
        immune=immune.astype(np.float32),
        cos2a=np.cos(2 * angle).astype(np.float32),
        sin2a=np.sin(2 * angle).astype(np.float32),
        tissue_mask=tissue,
        lesion_mask=lesion,
        necrosis_mask=necrosis,
        band_mask=band,
        stain_scale=stain_scale,
        grade_cue=str(grade_cue),
        stain_vectors=vectors,
    )
