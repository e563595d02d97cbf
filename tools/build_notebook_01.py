"""Write notebooks/01_slides_and_cohort.ipynb (then execute it with nbconvert)."""

import nbformat as nbf

nb = nbf.v4.new_notebook()
md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
cells = [
    md("""# 01 · Slides and the synthetic cohort

This notebook is the ground floor of the workbench: how a whole-slide image is opened and
read, how tissue is found and cut into regions, and the synthetic cohort that every other
notebook (and the test suite) runs on.

Whole-slide images are pyramids: the same tissue stored at several resolutions. The workbench
always speaks in **level-0 pixels** `(x, y)` when it talks to a slide, and in **microns per
pixel** (mpp) when it asks for a resolution, so code never depends on which levels a scanner
happened to write."""),
    code("""from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import workbench
from workbench import datasets, pp
from workbench.io import Slide, annotations_to_mask, read_geojson

DATA = Path("../data/generated/notebooks")
%config InlineBackend.figure_formats = ["jpeg"]
plt.rcParams["figure.dpi"] = 60"""),
    md("""## A synthetic cohort

`datasets.make_cohort` writes real pyramidal TIFFs (JPEG tiles, one page per level, the
resolution in the file), lesion ground truth and a clinical table whose survival times follow
a documented hazard model. It is seeded, so the same call gives the same files; and it
resumes, so running this cell again costs nothing."""),
    code("""cohort = datasets.make_cohort(DATA / "tiny", n_patients=6, size="tiny", seed=0, progress=False)
cohort.clinical"""),
    code("""# NBVAL_CHECK_OUTPUT
print(len(cohort.clinical), "patients; grades", sorted(cohort.clinical["grade"].unique().tolist()))"""),
    code("""datasets.montage(cohort);"""),
    md("""## Opening a slide

`Slide` wraps OpenSlide. Its `info` is a small frozen record of what the file says about
itself; `read_region` takes a level-0 corner and an output size, and an `mpp` — it picks the
pyramid level that is just fine enough and resamples from there."""),
    code("""slide = Slide(cohort.slide_path("S001"))
slide.info"""),
    code("""# NBVAL_CHECK_OUTPUT
print(slide.level_count >= 3, slide.mpp, slide.info.vendor)"""),
    code("""truth = read_geojson(cohort.lesion_geojson("S001"))
x0, y0, x1, y1 = truth[0].bounds()
cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
fig, axes = plt.subplots(1, 3, figsize=(12, 4))
for ax, mpp in zip(axes, [8.0, 2.0, 0.5]):
    size = 256
    half = size * mpp / slide.mpp / 2
    ax.imshow(slide.read_region((cx - half, cy - half), (size, size), mpp=mpp))
    ax.set_title(f"{mpp} µm/px"); ax.axis("off")
fig.suptitle("The same lesion centre at three resolutions: the nuclei only show when magnified");"""),
    md("""## Tissue and regions

`pp.detect_tissue` thresholds optical density (weighted by colour saturation, so grey dust is
not tissue). `pp.region_graph` cuts the tissue of the thumbnail into SLIC superpixels and
describes each one by stain-separated colour statistics, an LBP texture histogram and its
size; neighbouring regions are linked. This graph is what the global branch of the model
reads."""),
    code("""graph = pp.region_graph(slide, thumbnail_mpp=8.0, n_segments=600)
graph"""),
    code("""from skimage.segmentation import mark_boundaries

g = graph.uns["region_graph"]
fig, axes = plt.subplots(1, 2, figsize=(12, 5))
axes[0].imshow(mark_boundaries(g["thumbnail"], g["labels"]))
axes[0].set_title(f"{graph.n_obs} superpixels over tissue")
h = graph.X[:, list(graph.var_names).index("h_mean")]
xy = graph.obsm["spatial"] / np.array(g["scale_xy"])
axes[1].imshow(g["thumbnail"])
sc = axes[1].scatter(xy[:, 0], xy[:, 1], c=h, s=6, cmap="magma")
axes[1].set_title("region centroids, coloured by haematoxylin")
plt.colorbar(sc, ax=axes[1], shrink=0.7)
for ax in axes:
    ax.axis("off")"""),
    md("""## Ground truth as QuPath GeoJSON

Lesion outlines are stored as QuPath-compatible GeoJSON in level-0 pixels (QuPath opens these
files directly) and as a low-resolution PNG. Rasterising the polygons back onto the PNG's grid
gives the same mask — a check that the coordinates agree."""),
    code("""mask_png, downsample = cohort.lesion_mask("S001")
mask_geo = annotations_to_mask(truth, mask_png.shape, scale_xy=(downsample, downsample))
iou = (mask_png & mask_geo).sum() / (mask_png | mask_geo).sum()
print(f"{len(truth)} lesion polygons; IoU with the PNG mask {iou:.3f}")"""),
    code("""# NBVAL_CHECK_OUTPUT
print(iou > 0.95)"""),
    md("""## Your own slides

Any file OpenSlide reads works the same way. When a file does not record its resolution,
ask for sizes instead of mpp, or tell `Slide` the resolution: `Slide(path, mpp=0.25)`. The
cell below uses the shared real slides when they are present next to the project."""),
    code("""real = Path("../../shared/data/slides")
if real.is_dir():
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    for ax, path in zip(axes, sorted(real.iterdir())):
        with Slide(path) as s:
            ax.imshow(s.thumbnail(max_size=400))
            mpp = f"{s.mpp:.3f} µm/px" if s.mpp else "no mpp"
            ax.set_title(f"{path.name}\\n{s.info.vendor}, {s.level_count} levels, {mpp}", fontsize=8)
            ax.axis("off")
else:
    print("shared real slides not found; skipping")"""),
]
nb["cells"] = cells
nb["metadata"]["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nbf.write(nb, "notebooks/01_slides_and_cohort.ipynb")
