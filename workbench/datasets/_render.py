"""Full-resolution pixels of a synthetic slide, drawn procedurally from its :class:`Layout`.

A pixel's colour is a function of its global level-0 position alone:

* the layout maps are read by bilinear interpolation;
* textures (collagen fibres, chromatin grain, smudges) are periodic arrays indexed by the
  global position modulo their period;
* nuclei sit on global square grids of cells. Each cell's nucleus (present or not, type,
  jitter, size, shape, darkness) comes from an integer hash of the slide seed and the cell
  index, so a tile only needs the cells that can reach it and neighbouring tiles agree.

Colours are mixed in optical density space (Beer–Lambert) from a haematoxylin and an eosin
stain vector, which is what gives the purple nuclei / pink stroma look of H&E.

Three grids of nuclei are drawn:

``small``
    16 px cells: lymphocytes (the infiltrate) and necrotic debris.
``stroma``
    32 px cells: elongated fibroblast nuclei lying along the collagen direction.
``tumour``
    24-32 px cells by grade: the lesion's epithelial nuclei, orderly and modest at grade 1,
    crowded, large, dark and irregular (with nucleoli) at grade 3.

A nucleus is evaluated in a window of two cells around its cell. Cells whose indices share
parity have disjoint windows that tile the plane, so each parity class is assembled with
reshapes and combined with a maximum - no scatter, no per-nucleus Python loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from workbench.datasets._layout import SMALL_CELL, Layout

# Stain optical-density directions (R, G, B), normalised below.
_HEMATOXYLIN = np.array([0.60, 0.74, 0.30], dtype=np.float32)
_EOSIN = np.array([0.13, 0.86, 0.46], dtype=np.float32)
_HEMATOXYLIN /= np.linalg.norm(_HEMATOXYLIN)
_EOSIN /= np.linalg.norm(_EOSIN)
_GLASS_OD = 0.045  # the faint grey of empty glass

_TEX_FIBRE = 512
_TEX_FINE = 256
_TEX_MID = 384


@dataclass(frozen=True)
class TumourLook:
    """Appearance of lesion cells at one grade (lengths in level-0 pixels).

    ``cell`` is the spacing of the nucleus grid and ``jitter`` how far (in cells) a nucleus
    may stray from its cell centre; ``presence`` is the share of grid cells holding a nucleus
    away from glands (cells lining a lumen are almost always filled); ``radius``, ``size_cv``, ``elongation``, ``roughness``
    (outline wobble), ``darkness`` and ``darkness_cv`` shape the nuclei; ``vesicular`` and
    ``nucleolus`` add open chromatin and a nucleolus; ``mitosis`` is the share of very dark
    ragged figures. ``lumen_rate`` is the share of 60 µm gland cells that hold a lumen
    lined by a ring of nuclei (tubule formation). ``nucleolus_radius`` (px) and
    ``nucleolus_dark`` size a nucleolus.
    """

    cell: int
    presence: float
    radius: float
    size_cv: float
    elongation: float
    jitter: float
    roughness: float
    darkness: float
    darkness_cv: float
    vesicular: float
    nucleolus: float
    chromatin: float
    cytoplasm_h: float
    mitosis: float
    lumen_rate: float
    lumen_cell: int = 120
    nucleolus_radius: float = 1.9
    nucleolus_dark: float = 0.9


#: Grade 1 orderly glands with modest nuclei; grade 3 solid sheets of crowded, large,
#: pleomorphic, dark nuclei with nucleoli and mitoses; grade 2 in between.
TUMOUR_LOOKS = {
    1: TumourLook(24, 0.15, 7.0, 0.07, 1.35, 0.30, 0.02, 1.10, 0.06, 0.15, 0.0, 0.10, 0.13,
                  0.002, 0.95, 120),
    2: TumourLook(28, 0.90, 8.8, 0.16, 1.45, 0.60, 0.05, 1.40, 0.12, 0.30, 0.30, 0.22, 0.18,
                  0.01, 0.35, 120),
    3: TumourLook(32, 0.97, 10.5, 0.27, 1.70, 1.00, 0.10, 1.75, 0.18, 0.45, 0.75, 0.35, 0.22,
                  0.04, 0.0),
}  # fmt: skip

#: ``grade_cue="detail"``: grade shows only inside the nuclei, seen at <= 1 µm/px. Every
#: grade grows solid sheets (no glands) on the same nucleus grid, with the same nuclear size
#: distribution, elongation, darkness, cytoplasm and vesicular chromatin, so a lesion's colour
#: and texture on a thumbnail (>= 4 µm/px) do not depend on its grade. Grade 3 nuclei have
#: ragged outlines, open (vesicular) chromatin with coarse clumps, large dark nucleoli
#: (95 %) and 4 % mitotic figures; grade 1 nuclei are smooth, without nucleoli or mitoses,
#: with fine chromatin; grade 2 lies between. Grade 3 is paler (``darkness``) to make up for
#: the dark nucleoli and mitoses, so the mean colour of a lesion nearly matches across grades
#: (a 256-px crop at 0.5 µm/px tells grade 3 from grade 1 easily; a region of the 4 µm/px
#: thumbnail barely: region-feature AUC <= 0.62).
DETAIL_LOOKS = {
    1: TumourLook(26, 0.93, 8.4, 0.15, 1.30, 0.5, 0.0, 1.50, 0.10, 0.30, 0.0, 0.10, 0.18,
                  0.0, 0.0),
    2: TumourLook(26, 0.93, 8.4, 0.15, 1.30, 0.5, 0.10, 1.47, 0.10, 0.50, 0.50, 0.35, 0.18,
                  0.015, 0.0, nucleolus_radius=2.4, nucleolus_dark=1.0),
    3: TumourLook(26, 0.93, 8.4, 0.15, 1.30, 0.5, 0.20, 1.43, 0.10, 0.70, 0.95, 0.60, 0.18,
                  0.04, 0.0, nucleolus_radius=3.0, nucleolus_dark=1.3),
}  # fmt: skip

#: Which cue carries grade: ``"both"`` (lesion shape and size as well as nuclei, the
#: default) or ``"detail"`` (nuclei only).
GRADE_CUES = ("both", "detail")

#: Most nuclei lining one gland lumen.
_LINING_SLOTS = 16

#: Lymphocyte nucleus radius (level-0 pixels): small, round, very dark.
_LYMPH_RADIUS = 4.6

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_K_ROW = np.uint64(0x9E3779B97F4A7C15)
_K_COL = np.uint64(0xC2B2AE3D27D4EB4F)
_K_DRAW = np.uint64(0x165667B19E3779F9)


def _hash_uniform(key: int, rows: np.ndarray, cols: np.ndarray, draw: int) -> np.ndarray:
    """Uniform numbers in [0, 1) from (key, row, col, draw) with a SplitMix64 finaliser."""
    with np.errstate(over="ignore"):
        z = rows.astype(np.int64).view(np.uint64) * _K_ROW
        z = z ^ (cols.astype(np.int64).view(np.uint64) * _K_COL)
        z = z ^ (np.uint64(key) + np.uint64(draw) * _K_DRAW)
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        z = z ^ (z >> np.uint64(31))
    return ((z >> np.uint64(11)).astype(np.float64) * 2.0**-53).astype(np.float32)


def _periodic_noise(rng: np.random.Generator, size: int, filt: np.ndarray) -> np.ndarray:
    """Noise of period ``size`` filtered in the Fourier domain, unit spread."""
    spec = np.fft.fft2(rng.standard_normal((size, size)))
    out = np.real(np.fft.ifft2(spec * filt))
    return ((out - out.mean()) / out.std()).astype(np.float32)


def _make_textures(seed: int) -> dict[str, np.ndarray]:
    """Periodic textures of one slide: three fibre directions, fine grain and smudges."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    tex = {}
    n = _TEX_FIBRE
    ky, kx = np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n), indexing="ij")
    # a periodic warp makes the fibres wavy
    warp_filt = np.exp(-(kx**2 + ky**2) / (2 * (1.5 / n) ** 2 * 9))
    wy = 7.0 * _periodic_noise(rng, n, warp_filt)
    wx = 7.0 * _periodic_noise(rng, n, warp_filt)
    grid_y, grid_x = np.mgrid[0:n, 0:n].astype(np.float32)
    for k, theta in enumerate((0.0, math.pi / 3, 2 * math.pi / 3)):
        along = kx * math.cos(theta) + ky * math.sin(theta)
        across = -kx * math.sin(theta) + ky * math.cos(theta)
        # long along the fibre, a broad band of widths across it
        filt = np.exp(-((along / 0.008) ** 2)) * (
            np.exp(-((across / 0.09) ** 2)) - np.exp(-((across / 0.02) ** 2))
        )
        raw = _periodic_noise(rng, n, filt)
        raw = ndimage.map_coordinates(raw, [grid_y + wy, grid_x + wx], order=1, mode="grid-wrap")
        # mostly collagen, with thin pale clefts where the noise dips
        tex[f"fibre{k}"] = np.clip(0.72 + 0.22 * raw, 0.0, 1.0).astype(np.float32)
    n = _TEX_FINE
    ky, kx = np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n), indexing="ij")
    radial = np.sqrt(kx**2 + ky**2)
    fine = _periodic_noise(rng, n, np.exp(-(((radial - 0.22) / 0.08) ** 2)))
    tex["fine"] = np.clip(fine / 2.5, -1, 1)
    n = _TEX_MID
    ky, kx = np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n), indexing="ij")
    tex["mid"] = _periodic_noise(rng, n, np.exp(-(kx**2 + ky**2) / (2 * 0.02**2)))
    return tex


def _tile_periodic(tex: np.ndarray, x0: int, y0: int, w: int, h: int) -> np.ndarray:
    """The window ``[y0:y0+h, x0:x0+w]`` of the infinite periodic extension of ``tex``."""
    rows = tex.take(np.arange(y0, y0 + h), axis=0, mode="wrap")
    return rows.take(np.arange(x0, x0 + w), axis=1, mode="wrap")


def _lerp_axis0(values: np.ndarray, k0: int, start: int, count: int, ds: int) -> np.ndarray:
    """Linear interpolation along axis 0 from cell values (first cell ``k0``) to pixels."""
    frac = ((np.arange(ds, dtype=np.float32) + 0.5) / ds)[None, :, None]
    seg = values[:-1, None, :] + (values[1:, None, :] - values[:-1, None, :]) * frac
    seg = seg.reshape(-1, values.shape[1])
    offset = start - (k0 * ds + ds // 2)
    return seg[offset : offset + count]


def _upsample(grid: np.ndarray, x0: int, y0: int, w: int, h: int, ds: int) -> np.ndarray:
    """Bilinear values of a layout map at the pixels of a level-0 window.

    Pixel ``x`` sits at layout position ``(x + 0.5) / ds - 0.5`` (cell centres), clamped at
    the borders; between two cell centres the ``ds`` pixels share one pattern of weights, so
    broadcasting does the work without gathers.
    """
    half = ds // 2
    ky0, ky1 = (y0 - half) // ds, (y0 + h - 1 - half) // ds + 1
    kx0, kx1 = (x0 - half) // ds, (x0 + w - 1 - half) // ds + 1
    rows = np.clip(np.arange(ky0, ky1 + 1), 0, grid.shape[0] - 1)
    cols = np.clip(np.arange(kx0, kx1 + 1), 0, grid.shape[1] - 1)
    block = grid[rows[:, None], cols[None, :]]
    block = _lerp_axis0(block, ky0, y0, h, ds)
    return _lerp_axis0(block.T, kx0, x0, w, ds).T


def _smoothstep_sdf(sdf: np.ndarray, width: float = 0.35) -> np.ndarray:
    t = np.clip((sdf + width) / (2 * width), 0.0, 1.0)
    return t * t * (3 - 2 * t)


class SlideRenderer:
    """Draw any level-0 window of a slide from its layout; same window, same pixels."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        looks = DETAIL_LOOKS if layout.grade_cue == "detail" else TUMOUR_LOOKS
        self.look = looks[layout.grade]
        self.textures = _make_textures(layout.texture_seed)
        key = layout.cell_seed
        self._keys = {
            "small": key ^ 0x1111,
            "stroma": key ^ 0x2222,
            "tumour": key ^ 0x3333,
            "lumen": key ^ 0x4444,
            "lining": key ^ 0x5555,
        }

    # --- layout look-ups ---------------------------------------------------------------------
    def _maps(self, x0: int, y0: int, w: int, h: int, names: tuple[str, ...]) -> list[np.ndarray]:
        lay = self.layout
        return [_upsample(getattr(lay, name), x0, y0, w, h, lay.downsample) for name in names]

    def _at_points(self, xs: np.ndarray, ys: np.ndarray, names: tuple[str, ...]) -> list:
        from scipy import ndimage

        ds = self.layout.downsample
        coords = [ys.ravel() / ds - 0.5, xs.ravel() / ds - 0.5]
        return [
            ndimage.map_coordinates(getattr(self.layout, n), coords, order=1, mode="nearest")
            .reshape(xs.shape)
            .astype(np.float32)
            for n in names
        ]

    # --- nuclei --------------------------------------------------------------------------------
    def _cell_size(self, kind: str) -> int:
        if kind == "tumour":
            return self.look.cell
        if kind in ("lumen", "lining"):
            return self.look.lumen_cell
        return SMALL_CELL if kind == "small" else 2 * SMALL_CELL

    def _stamp_size(self, kind: str) -> int:
        """Side of a square that holds any nucleus of this grid, wobble included."""
        if kind == "small":
            reach, wobble = (_LYMPH_RADIUS + 1.0) * math.sqrt(1.1), 0.25
        elif kind == "stroma":
            reach, wobble = 13.5, 0.04
        elif kind == "lumen":
            reach, wobble = 26.0, 0.0
        elif kind == "lining":
            look = self.look
            reach, wobble = look.radius * 1.6 * math.sqrt(look.elongation), look.roughness
        else:
            # mitotic figures wobble the most (a3 = 0.3 plus the usual a4)
            reach, wobble = self._tumour_cap(), 0.3 + 0.5 * self.look.roughness
        return 2 * math.ceil(reach / (1 - wobble) + 1.5)

    def _tumour_cap(self) -> float:
        look = self.look
        return look.cell * (1 - look.jitter / 2) - 1.5

    def _lumens(self, rows: np.ndarray, cols: np.ndarray) -> dict[str, np.ndarray]:
        """Gland lumens on their own coarse grid: centre, radius and presence per cell."""
        look = self.look
        g = look.lumen_cell
        key = self._keys["lumen"]

        def draw(k: int) -> np.ndarray:
            return _hash_uniform(key, rows, cols, k)

        cx = (cols + 0.5 + 0.45 * (draw(0) - 0.5)) * g
        cy = (rows + 0.5 + 0.45 * (draw(1) - 0.5)) * g
        (lsdf,) = self._at_points(cx, cy, ("lesion_sdf",))
        (nsdf,) = self._at_points(cx, cy, ("necrosis_sdf",))
        deep = (lsdf > 1.2) & (nsdf < -1.0)
        present = deep & (draw(2) < look.lumen_rate)
        radius = 14.0 + 12.0 * draw(3)
        return {"cx": cx, "cy": cy, "r": radius, "present": present}

    def _lining(self, rows: np.ndarray, cols: np.ndarray) -> dict[str, np.ndarray]:
        """Nuclei lining each lumen: evenly spaced on a circle, long axis pointing inward."""
        look = self.look
        lum = self._lumens(rows, cols)
        slots = np.arange(_LINING_SLOTS)
        rows_k = rows[..., None] * _LINING_SLOTS + slots
        cols_k = np.broadcast_to(cols[..., None], rows_k.shape)
        key = self._keys["lining"]

        def draw(k: int) -> np.ndarray:
            return _hash_uniform(key, rows_k, cols_k, k)

        target = (lum["r"] + 1.25 * look.radius)[..., None]
        count = np.minimum(np.floor(2 * math.pi * target / (1.9 * look.radius)), _LINING_SLOTS)
        phase = _hash_uniform(key, rows, cols, 99)[..., None] * 2 * math.pi
        theta = phase + 2 * math.pi * (slots + 0.15 * (draw(0) - 0.5)) / np.maximum(count, 1)
        radial = target * (1 + 0.06 * (draw(1) - 0.5))
        r = look.radius * np.clip(1 + look.size_cv * _gauss(draw(2)), 0.6, 1.6)
        ratio = np.float32(look.elongation)
        z_dark = _gauss(draw(3))
        zeros = np.zeros(rows_k.shape, dtype=np.float32)
        present = lum["present"][..., None] & (slots < count) & (draw(4) < 0.95)
        return {
            "cx": (lum["cx"][..., None] + radial * np.cos(theta)).astype(np.float32),
            "cy": (lum["cy"][..., None] + radial * np.sin(theta)).astype(np.float32),
            "a": (r * np.sqrt(ratio)).astype(np.float32),
            "b": (r / np.sqrt(ratio)).astype(np.float32),
            "a3": zeros + look.roughness * draw(5),
            "a4": zeros,
            "ph3": draw(6) * np.float32(2 * math.pi),
            "ph4": zeros,
            "ves": zeros + look.vesicular,
            "nucleolus": zeros,
            "dark": look.darkness * np.clip(1 + look.darkness_cv * z_dark, 0.6, 1.6),
            "cos": np.cos(theta).astype(np.float32),
            "sin": np.sin(theta).astype(np.float32),
            "present": present,
        }

    def _cells(self, kind: str, rows: np.ndarray, cols: np.ndarray) -> dict[str, np.ndarray]:
        """Parameters of the nuclei of the given cells (``present`` says which exist)."""
        key = self._keys[kind]

        def draw(k: int) -> np.ndarray:
            return _hash_uniform(key, rows, cols, k)

        if kind == "lining":
            return self._lining(rows, cols)
        if kind == "lumen":
            lum = self._lumens(rows, cols)
            zeros = np.zeros_like(lum["cx"])
            return {"cx": lum["cx"], "cy": lum["cy"], "a": lum["r"], "b": lum["r"],
                    "a3": zeros, "a4": zeros, "ph3": zeros, "ph4": zeros, "ves": zeros,
                    "nucleolus": zeros, "dark": zeros + 1, "cos": zeros + 1, "sin": zeros,
                    "present": lum["present"]}  # fmt: skip
        cell = self._cell_size(kind)
        jitter = self.look.jitter if kind == "tumour" else 1.0
        cx = ((cols + 0.5 + jitter * (draw(0) - 0.5)) * cell).astype(np.float32)
        cy = ((rows + 0.5 + jitter * (draw(1) - 0.5)) * cell).astype(np.float32)
        tsdf, lsdf, nsdf, immune, c2, s2 = self._at_points(
            cx, cy, ("tissue_sdf", "lesion_sdf", "necrosis_sdf", "immune", "cos2a", "sin2a")
        )
        tissue = _smoothstep_sdf(tsdf)
        lesion = _smoothstep_sdf(lsdf)
        necrosis = _smoothstep_sdf(nsdf)
        u_present, u_size, u_shape, u_dark = draw(2), draw(3), draw(4), draw(5)
        angle = draw(6) * np.float32(math.pi)
        z_size = _gauss(u_size)
        zeros = np.zeros_like(cx)
        p = {"cx": cx, "cy": cy, "a3": zeros, "a4": zeros, "ph3": draw(7) * 6.2832,
             "ph4": draw(8) * 6.2832, "ves": zeros, "nucleolus": zeros}  # fmt: skip
        if kind == "small":
            p_lymph = tissue * (immune + 0.012 * (1 - necrosis))
            p_debris = 0.75 * tissue * necrosis
            lymph = u_present < p_lymph
            debris = ~lymph & (u_present < p_lymph + p_debris)
            r = np.where(lymph, _LYMPH_RADIUS + 0.4 * z_size, 1.4 + 1.6 * u_size)
            ratio = np.where(lymph, 1.0 + 0.1 * u_shape, 1.0 + 1.2 * u_shape)
            p["a"], p["b"] = r * np.sqrt(ratio), r / np.sqrt(ratio)
            p["dark"] = np.where(lymph, 2.0 + 0.2 * u_dark, 1.5 + 0.6 * u_dark)
            p["a3"] = np.where(debris, 0.12, 0.03).astype(np.float32)
            p["a4"] = np.where(debris, 0.1, 0.0).astype(np.float32)
            p["present"] = lymph | debris
        elif kind == "stroma":
            stroma = tissue * (1 - lesion) * (1 - necrosis)
            p["present"] = u_present < 0.4 * stroma
            p["a"] = 9.5 + 3.5 * u_size
            p["b"] = 2.1 + 0.9 * u_shape
            angle = 0.5 * np.arctan2(s2, c2) + 0.25 * (angle - 1.57)
            p["dark"] = 1.3 + 0.3 * u_dark
            p["a3"] = np.full_like(cx, 0.04)
        else:
            look = self.look
            presence = look.presence * lesion * (1 - necrosis) * tissue
            r = look.radius * np.clip(1 + look.size_cv * z_size, 0.55, 1.9)
            ratio = 1 + (look.elongation - 1) * u_shape
            z_dark = _gauss(u_dark)
            dark = look.darkness * np.clip(1 + look.darkness_cv * z_dark, 0.6, 1.6)
            a3 = look.roughness * draw(9)
            a4 = 0.5 * look.roughness * draw(10)
            if look.lumen_rate > 0:  # gland lumens and their lining are drawn apart
                g = look.lumen_cell
                lum = self._lumens(
                    np.floor(cy / g).astype(np.int64), np.floor(cx / g).astype(np.int64)
                )
                dist = np.hypot(cx - lum["cx"], cy - lum["cy"])
                gland = lum["present"] & (dist < lum["r"] + 2.3 * look.radius)
                presence = np.where(gland, 0.0, presence)
            # mitotic figures: small, very dark, ragged bars
            mitosis = draw(12) < look.mitosis
            dark = np.where(mitosis, 2.6, dark)
            r = np.where(mitosis, 0.7 * r, r)
            ratio = np.where(mitosis, 2.2, ratio)
            a3 = np.where(mitosis, 0.3, a3)
            cap = self._tumour_cap()
            p["a"] = np.minimum(r * np.sqrt(ratio), cap)
            p["b"] = np.minimum(r / np.sqrt(ratio), cap)
            p["dark"], p["a3"], p["a4"] = dark, a3.astype(np.float32), a4
            p["ves"] = np.where(mitosis, 0.0, look.vesicular).astype(np.float32)
            p["nucleolus"] = ((draw(11) < look.nucleolus) & ~mitosis).astype(np.float32)
            if (look.nucleolus_radius, look.nucleolus_dark) != (1.9, 0.9):
                p["nuc_r"] = np.full_like(cx, look.nucleolus_radius)
                p["nuc_d"] = np.full_like(cx, look.nucleolus_dark)
            p["present"] = u_present < presence
        p["cos"], p["sin"] = np.cos(angle), np.sin(angle)
        return p

    def _nuclei(self, kind: str, x0: int, y0: int, w: int, h: int) -> np.ndarray:
        """Haematoxylin amount contributed by one grid of nuclei over a window."""
        cell = self._cell_size(kind)
        box = self._stamp_size(kind)
        pad = 2 * (box + cell)  # every stamp of the cells below fits inside the padding
        cols = np.arange((x0 - box) // cell - 1, (x0 + w + box) // cell + 2)
        rows = np.arange((y0 - box) // cell - 1, (y0 + h + box) // cell + 2)
        rr, cc = np.meshgrid(rows, cols, indexing="ij")
        p = self._cells(kind, rr, cc)
        sel = p["present"]
        out = np.zeros((h + 2 * pad, w + 2 * pad), dtype=np.float32)
        if sel.any():
            sel_idx = np.flatnonzero(sel.ravel())
            reach = np.maximum(p["a"], p["b"]).ravel()[sel_idx] / (
                1 - p["a3"].ravel()[sel_idx] - p["a4"].ravel()[sel_idx]
            )
            need = np.minimum(2 * np.ceil(reach + 1.5), box)
            bucket = (np.ceil(need / 8) * 8).astype(np.int64)
            flat = {k: v.ravel() for k, v in p.items() if k != "present"}
            width = w + 2 * pad
            for size in np.unique(bucket):
                take = sel_idx[bucket == size]
                q = {k: v[take][:, None, None] for k, v in flat.items()}
                # stamp corners (global pixels) and the pixel centres inside each stamp
                sx = np.floor(flat["cx"][take] - size / 2 + 0.5).astype(np.int64)
                sy = np.floor(flat["cy"][take] - size / 2 + 0.5).astype(np.int64)
                local = np.arange(size, dtype=np.float32) + 0.5
                dx = (sx[:, None] + local[None, :]).astype(np.float32)[:, None, :] - q["cx"]
                dy = (sy[:, None] + local[None, :]).astype(np.float32)[:, :, None] - q["cy"]
                vals = _nucleus_stain(dx, dy, q)
                base = (sy - (y0 - pad)) * width + (sx - (x0 - pad))
                offs = (np.arange(size)[:, None] * width + np.arange(size)[None, :]).ravel()
                idx = (base[:, None] + offs[None, :]).ravel()
                np.maximum.at(out.ravel(), idx, vals.ravel())
        return out[pad : pad + h, pad : pad + w]

    # --- whole window ------------------------------------------------------------------------
    def render(self, x0: int, y0: int, w: int, h: int) -> np.ndarray:
        """RGB uint8 pixels of the level-0 window at ``(x0, y0)`` of size ``(w, h)``."""
        lay = self.layout
        ds = lay.downsample
        glass = np.uint8(round(255 * math.exp(-_GLASS_OD)))
        out = np.full((h, w, 3), glass, dtype=np.uint8)
        # only the part of the window near tissue needs drawing
        r0, c0 = max(y0 // ds - 2, 0), max(x0 // ds - 2, 0)
        near = lay.tissue_sdf[r0 : (y0 + h) // ds + 3, c0 : (x0 + w) // ds + 3] > -2.0
        if not near.any():
            return out
        rows = np.flatnonzero(near.any(axis=1)) + r0
        cols = np.flatnonzero(near.any(axis=0)) + c0
        bx0, bx1 = max(x0, int(cols[0]) * ds), min(x0 + w, (int(cols[-1]) + 1) * ds)
        by0, by1 = max(y0, int(rows[0]) * ds), min(y0 + h, (int(rows[-1]) + 1) * ds)
        if bx1 <= bx0 or by1 <= by0:
            return out
        out[by0 - y0 : by1 - y0, bx0 - x0 : bx1 - x0] = self._draw(bx0, by0, bx1 - bx0, by1 - by0)
        return out

    def _draw(self, x0: int, y0: int, w: int, h: int) -> np.ndarray:
        lay = self.layout
        tsdf, lsdf, nsdf, c2, s2 = self._maps(
            x0, y0, w, h, ("tissue_sdf", "lesion_sdf", "necrosis_sdf", "cos2a", "sin2a")
        )
        tissue = _smoothstep_sdf(tsdf, 0.12)
        lesion = _smoothstep_sdf(lsdf)
        necrosis = _smoothstep_sdf(nsdf)
        tex = self.textures
        fine = _tile_periodic(tex["fine"], x0, y0, w, h)
        mid = _tile_periodic(tex["mid"], x0, y0, w, h)
        # blend three fibre directions by how well each matches the local direction
        fibre = np.zeros((h, w), dtype=np.float32)
        weights = np.full((h, w), 1e-6, dtype=np.float32)
        for k, theta in enumerate((0.0, math.pi / 3, 2 * math.pi / 3)):
            t = 1 + c2 * np.float32(math.cos(2 * theta)) + s2 * np.float32(math.sin(2 * theta))
            t *= t * t
            weights += t
            t *= _tile_periodic(tex[f"fibre{k}"], x0, y0, w, h)
            fibre += t
        fibre /= weights

        w_nec = necrosis
        w_les = lesion * (1 - w_nec)
        w_str = 1 - w_les - w_nec
        look = self.look
        eosin = (
            w_str * (0.12 + 0.55 * fibre)
            + w_les * (0.34 + 0.07 * mid)
            + w_nec * (0.50 + 0.10 * mid + 0.04 * fine)
        )
        hema = w_str * 0.05 + w_les * look.cytoplasm_h + w_nec * (0.12 + 0.05 * fine)

        nuclei = np.maximum(
            self._nuclei("small", x0, y0, w, h), self._nuclei("stroma", x0, y0, w, h)
        )
        if float(lesion.max()) > 0.0:
            np.maximum(nuclei, self._nuclei("tumour", x0, y0, w, h), out=nuclei)
            if look.lumen_rate > 0:  # gland lumens: empty space with a little pale secretion
                np.maximum(nuclei, self._nuclei("lining", x0, y0, w, h), out=nuclei)
                lumen = self._nuclei("lumen", x0, y0, w, h)
                tissue = tissue * (1 - 0.85 * lumen)
        chromatin = 0.12 + w_les * look.chromatin
        hema = hema + nuclei * (1 + chromatin * fine)
        eosin = eosin * (1 - 0.45 * np.clip(nuclei, 0, 1))

        h_scale, e_scale = lay.stain_scale
        hema *= tissue * np.float32(h_scale)
        eosin *= tissue * np.float32(e_scale)
        h_vec, e_vec = (_HEMATOXYLIN, _EOSIN) if lay.stain_vectors is None else lay.stain_vectors
        # Beer-Lambert: transmitted light falls exponentially with optical density
        out = np.empty((h, w, 3), dtype=np.uint8)
        for c in range(3):
            od = hema * h_vec[c]
            od += eosin * e_vec[c]
            od += np.float32(_GLASS_OD)
            np.negative(od, out=od)
            np.exp(od, out=od)
            od *= np.float32(255.0)
            od += np.float32(0.5)
            out[..., c] = od  # within [0, 255] since od >= 0
        return out


def _nucleus_stain(dx: np.ndarray, dy: np.ndarray, q: dict[str, np.ndarray]) -> np.ndarray:
    """Haematoxylin of nuclei at offsets ``(dx, dy)`` from their centres (anti-aliased).

    The outline is an ellipse whose radius wobbles with the 3rd and 4th angular harmonics
    (irregular, pleomorphic nuclei); ``ves`` darkens the rim against the centre (open
    chromatin) and ``nucleolus`` adds a dark dot a little off centre.
    """
    u = dx * q["cos"] + dy * q["sin"]
    v = dy * q["cos"] - dx * q["sin"]
    ua = u / q["a"]
    vb = v / q["b"]
    rho2 = ua * ua + vb * vb
    rho = np.sqrt(rho2)
    if np.any(q["a3"]) or np.any(q["a4"]):
        inv = 1.0 / (rho + 1e-6)
        c1, s1 = ua * inv, vb * inv
        c2, s2 = c1 * c1 - s1 * s1, 2 * c1 * s1
        c3, s3 = c1 * c2 - s1 * s2, s1 * c2 + c1 * s2
        c4, s4 = c2 * c2 - s2 * s2, 2 * s2 * c2
        wobble = q["a3"] * (c3 * np.cos(q["ph3"]) + s3 * np.sin(q["ph3"]))
        wobble += q["a4"] * (c4 * np.cos(q["ph4"]) + s4 * np.sin(q["ph4"]))
        rho *= 1 + wobble
    radius = np.sqrt(q["a"] * q["b"])
    cover = np.clip((1 - rho) * radius + 0.5, 0, 1)
    stain = cover * q["dark"]
    if np.any(q["ves"]):
        stain *= 1 + q["ves"] * (rho2 - 0.45)
    if np.any(q["nucleolus"]):
        nx = u - 0.25 * q["a"]
        dist = np.sqrt(nx * nx + v * v)
        if "nuc_r" in q:  # a nucleolus of its own size and darkness
            stain += q["nucleolus"] * cover * np.clip(q["nuc_r"] - dist, 0, 1) * q["nuc_d"]
        else:
            stain += q["nucleolus"] * cover * np.clip(1.9 - dist, 0, 1) * 0.9
    return stain


def _gauss(u: np.ndarray) -> np.ndarray:
    """Standard normal quantiles of uniforms, clipped to +-2.5 so sizes stay bounded."""
    from scipy.special import ndtri

    return np.clip(ndtri(np.clip(u, 1e-6, 1 - 1e-6)), -2.5, 2.5).astype(np.float32)
