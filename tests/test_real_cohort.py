"""Real tissue through the user's path: slide folder + clinical CSV + QuPath-style GeoJSON
-> ``workbench train --label`` -> ``workbench extract`` -> ``workbench discover``.

The slides are written here as small pyramidal TIFFs from the shared real image/mask pairs
(``masks/ocdc``: oral squamous cell carcinoma; ``masks/camelyon``: lymph-node metastases), two
images side by side per slide, with the pathologists' tumour masks as ``Tumor`` annotations.
The label is the tissue the slide comes from. Survival columns are drawn at random (the
discovery step is checked for mechanics, not for findings). Skipped without the shared data.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from workbench._steps import training_record
from workbench.cli import main

ARGS = ["--set", "thumbnail_mpp=4", "--set", "n_segments=150", "--set", "detail_mpp=2",
        "--set", "crop_size=64", "--no-progress"]  # fmt: skip


def _pairs(folder, n: int):
    from PIL import Image

    images = sorted((folder / "images").iterdir())[:n]
    for path in images:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        mask = np.asarray(Image.open(folder / "masks" / path.name).convert("L")) > 127
        yield path.stem, rgb, mask


@pytest.fixture(scope="module")
def real_cohort(real_data, tmp_path_factory, write_pyramid_tiff):
    """10 slides (5 oral SCC, 5 lymph node), their annotations and a clinical CSV."""
    from workbench.io import mask_to_annotations, write_geojson

    root = tmp_path_factory.mktemp("real")
    rows = []
    rng = np.random.default_rng(0)
    for source, tissue, n in (("ocdc", "oral SCC", 10), ("camelyon", "lymph node", 10)):
        pairs = list(_pairs(real_data / "masks" / source, n))
        for k in range(0, len(pairs), 2):
            (a, rgb_a, m_a), (b, rgb_b, m_b) = pairs[k], pairs[k + 1]
            sid = f"{source}-{a}-{b}"
            rgb = np.concatenate([rgb_a, rgb_b], axis=1)
            mask = np.concatenate([m_a, m_b], axis=1)
            no_mpp = source == "camelyon" and k == 0  # one file without a resolution
            write_pyramid_tiff(root / "slides" / f"{sid}.tif", rgb, mpp=None if no_mpp else 1.0)
            small = mask[::4, ::4]
            anns = mask_to_annotations(small, classification="Tumor", scale_xy=(4, 4))
            # QuPath names an export after the image file; ours use the slide id
            name = f"{sid}.tif.geojson" if k % 4 == 0 else f"{sid}.geojson"
            write_geojson(root / "annotations" / name, anns)
            rows.append({"patient_id": f"{source[:2].upper()}{k // 2}", "slide": f"{sid}.tif",
                         "tissue": tissue, "time": float(rng.uniform(5, 80)),
                         "event": int(len(rows) % 5 != 4), "age": int(rng.integers(40, 80)),
                         "tumour_share": float(mask.mean()), "no_mpp": no_mpp})  # fmt: skip
    table = pd.DataFrame(rows)
    table.to_csv(root / "clinical.csv", index=False)
    no_mpp = table.loc[table["no_mpp"], "slide"].str.removesuffix(".tif").tolist()
    test = table.groupby("tissue").tail(2)  # two slides of each tissue held out
    table.drop(test.index).to_csv(root / "train.csv", index=False)
    return {"root": root, "table": table, "test": test, "mpp": f"{no_mpp[0]}=1.0"}


@pytest.mark.slow
@pytest.mark.realdata
def test_train_extract_discover_on_real_tissue_through_the_cli(real_cohort, capsys):
    from workbench.io import Cohort
    from workbench.tl import classification_metrics, focus_in_mask, read_slides

    root = real_cohort["root"]
    cohort = Cohort.from_folder(
        root / "slides", root / "clinical.csv", annotations_dir=root / "annotations",
        mpp={real_cohort["mpp"].split("=")[0]: 1.0},
    )  # fmt: skip
    assert len(cohort) == 10 and cohort.has_annotations
    assert all(cohort.annotations(s) for s in cohort.slide_ids)

    train = ["train", str(root / "slides"), "--clinical", str(root / "train.csv"),
             "--label", "tissue", "--annotations", str(root / "annotations"),
             "--mpp", real_cohort["mpp"], "--on-unmatched", "drop", "--epochs", "6",
             "--out", str(root / "model"), *ARGS]  # fmt: skip
    assert main(train) == 0
    assert "predict 'tissue' (lymph node, oral SCC)" in capsys.readouterr().out
    record = training_record(root / "model")
    assert record["classes"] == ["lymph node", "oral SCC"] and len(record["train_slides"]) == 6
    history = record["history"]
    assert history[-1]["slide"] < history[0]["slide"]
    assert "node" in history[0]  # the annotations supervised regions

    extract = ["extract", str(root / "slides"), "--model", str(root / "model"),
               "--out", str(root / "h5ad"), "--mpp", real_cohort["mpp"], "--no-progress"]  # fmt: skip
    assert main(extract) == 0
    slides = {a.uns["slide_id"]: a for a in read_slides(root / "h5ad")}
    assert set(slides) == set(cohort.slide_ids)

    # held-out slides: the numbers are reported, the mechanics asserted
    test_ids = [s.removesuffix(".tif") for s in real_cohort["test"]["slide"]]
    classes = record["classes"]
    y, probs, hits, shares = [], [], [], []
    for sid in test_ids:
        ex = slides[sid].uns["explain"]
        assert ex["label"] == "tissue" and ex["predicted_label"] in classes
        y.append(classes.index(cohort.labels("tissue")[sid]))
        probs.append(np.asarray(ex["probabilities"], float))
        mask, ds = cohort.lesion_mask(sid, downsample=4)
        hits += focus_in_mask(slides[sid], mask, ds).tolist()
        shares.append(float(mask.mean()))
    metrics = classification_metrics(np.asarray(y), np.asarray(probs))
    print(json.dumps({"real_tissue_check": {**metrics, "focus_hit_rate": float(np.mean(hits)),
                      "tumour_area_share": float(np.mean(shares)), "n_test": len(test_ids)}}))  # fmt: skip
    assert metrics["auc"] is not None and 0.0 <= metrics["auc"] <= 1.0

    assert main(["discover", str(root / "h5ad"), str(root / "clinical.csv"),
                 "--out", str(root / "disc")]) == 0  # fmt: skip
    assert (root / "disc" / "markers.csv").read_text().count("\n") > 3


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("edit", "extra", "message"),
    [
        (None, ["--label", "stage"], "no label column 'stage'"),
        (lambda t: t.assign(tissue="oral SCC"), ["--label", "tissue"], "single class"),
        (
            lambda t: pd.concat([t, t.iloc[[0]].assign(slide="missing.svs", patient_id="X")]),
            ["--label", "tissue"],
            "have no slide among the slide files",
        ),  # fmt: skip
        (None, ["--label", "tissue", "--encoder", "uni2-h"], "unknown encoder 'uni2-h'"),
        (None, ["--label", "tissue", "--encoder", "/nowhere/uni.pt2"], "no encoder file"),
    ],
)
def test_bad_inputs_of_the_real_path_get_specific_errors(real_cohort, tmp_path, capsys, edit,
                                                         extra, message):  # fmt: skip
    root = real_cohort["root"]
    table = real_cohort["table"]
    csv = tmp_path / "clinical.csv"
    (edit(table) if edit else table).to_csv(csv, index=False)
    args = ["train", str(root / "slides"), "--clinical", str(csv), "--mpp", real_cohort["mpp"],
            "--out", str(tmp_path / "m"), *extra, *ARGS]  # fmt: skip
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "m").exists()  # nothing half-written


@pytest.mark.realdata
def test_an_annotation_for_an_unknown_slide_is_named(real_cohort, tmp_path, capsys):
    import shutil

    root = real_cohort["root"]
    ann = tmp_path / "annotations"
    shutil.copytree(root / "annotations", ann)
    shutil.copy(next(ann.iterdir()), ann / "TCGA-ZZ-0000.geojson")
    args = ["train", str(root / "slides"), "--clinical", str(root / "clinical.csv"),
            "--label", "tissue", "--annotations", str(ann), "--mpp", real_cohort["mpp"],
            "--out", str(tmp_path / "m"), *ARGS]  # fmt: skip
    assert main(args) == 2
    assert "match no slide of the cohort (TCGA-ZZ-0000.geojson)" in capsys.readouterr().err


@pytest.mark.realdata
def test_weights_that_do_not_fit_are_refused(real_cohort, tmp_path, capsys):
    from workbench.models import SelfCalibratedModel, save_checkpoint
    from workbench.models._checkpoint import _config_digest
    from workbench.pp import feature_names

    model = SelfCalibratedModel(in_features=len(feature_names()), hidden=8, embed_dim=8,
                                detail_width=4)  # fmt: skip
    path = save_checkpoint(model, tmp_path / "m")
    cfg = json.loads((path / "config.json").read_text())
    cfg["config"]["hidden"] = 16  # a consistent forgery: checksum recomputed
    cfg["config_sha256"] = _config_digest(cfg)
    (path / "config.json").write_text(json.dumps(cfg))
    root = real_cohort["root"]
    args = ["extract", str(root / "slides"), "--model", str(path), "--out", str(tmp_path / "o"),
            "--mpp", real_cohort["mpp"], "--no-progress"]  # fmt: skip
    assert main(args) == 2
    assert "weights do not fit a SelfCalibratedModel" in capsys.readouterr().err
    assert not list((tmp_path / "o").glob("*.h5ad"))
