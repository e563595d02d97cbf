"""Rebuild docs/images/synthetic_montage.png (the README figure).

    .venv/bin/python tools/build_montage.py

Writes an 8-patient demo-size cohort (seed 0) under data/generated/montage_demo if it is not
there yet, then draws its thumbnails and level-0 crops of a grade 1, 2 and 3 lesion.
"""

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import openslide  # noqa: E402
from PIL import Image  # noqa: E402
from scipy import ndimage  # noqa: E402

from workbench.datasets import make_cohort, montage  # noqa: E402

cohort = make_cohort("data/generated/montage_demo", n_patients=8, size="demo", seed=0)
fig = plt.figure(figsize=(10, 6.4))
gs = fig.add_gridspec(2, 3, height_ratios=[1.25, 1], hspace=0.08, wspace=0.04)
ax = fig.add_subplot(gs[0, :])
montage(cohort, ncols=4, max_side=320, outline=False, ax=ax)
ax.set_title("Synthetic cohort: thumbnails (8 µm/px)", fontsize=9)
truth = cohort.truth
for i, grade in enumerate((1, 2, 3)):
    sid = str(truth.loc[truth["grade"] == grade, "slide_id"].iloc[0])
    mask, ds = cohort.lesion_mask(sid)
    core = ndimage.binary_erosion(mask, iterations=4)
    core = core if core.any() else mask
    rows, cols = np.nonzero(core)
    k = len(rows) // 2
    x, y = int(cols[k]) * ds - 300, int(rows[k]) * ds - 200
    with openslide.OpenSlide(str(cohort.slide_path(sid))) as s:
        crop = s.read_region((x, y), 0, (600, 400)).convert("RGB")
    a = fig.add_subplot(gs[1, i])
    a.imshow(crop)
    a.set_axis_off()
    a.set_title(f"grade {grade} lesion ({sid}), 0.5 µm/px", fontsize=8)
buf = io.BytesIO()
fig.savefig(buf, dpi=100, bbox_inches="tight")
plt.close(fig)
im = Image.open(buf).convert("RGB")
print(im.size)
im.quantize(colors=192, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
    "docs/images/synthetic_montage.png", optimize=True
)
