from __future__ import annotations

import csv
from collections import defaultdict

import pytest

from workbench._errors import WorkbenchError
from workbench.datasets import EBHI_CLASSES, ebhi_case_split, ebhi_images


def test_case_split_is_fixed_by_the_id_and_covers_all_three_parts():
    ids = [str(2000000 + i) for i in range(400)]
    parts = [ebhi_case_split(i) for i in ids]
    assert parts == [ebhi_case_split(i) for i in ids]
    share = {p: parts.count(p) / len(parts) for p in ("test", "val", "train")}
    assert 0.22 < share["test"] < 0.38 and 0.08 < share["val"] < 0.22
    assert 0.45 < share["train"] < 0.65


def test_unknown_split_class_or_folder_is_refused(tmp_path):
    with pytest.raises(WorkbenchError, match="unknown EBHI split"):
        ebhi_images(tmp_path, split="dev")
    with pytest.raises(WorkbenchError, match="unknown EBHI-Seg class"):
        ebhi_images(tmp_path, classes=["Adeno"])
    with pytest.raises(WorkbenchError, match="no EBHI-Seg manifest"):
        ebhi_images(tmp_path)


@pytest.mark.realdata
def test_real_images_split_by_case_across_classes(real_data):
    if not (real_data / "masks" / "ebhi_seg").is_dir():
        pytest.skip("the shared data has no masks/ebhi_seg")
    images = ebhi_images(real_data)
    assert {im.cls for im in images} <= set(EBHI_CLASSES)
    parts_of_case = defaultdict(set)
    for im in images:
        parts_of_case[im.case_id].add(im.split)
    assert all(len(p) == 1 for p in parts_of_case.values())  # a case never straddles splits
    assert {p for ps in parts_of_case.values() for p in ps} == {"test", "val", "train"}
    # every image row of the manifest with a mask is indexed
    with open(real_data / "masks" / "ebhi_seg" / "manifest.csv", newline="") as fh:
        n_rows = sum(r["role"] == "image" for r in csv.DictReader(fh))
    assert len(images) == n_rows
    image, mask = images[0].load()
    assert image.shape[2] == 3 and mask.shape == image.shape[:2] and mask.dtype == bool

    held = ebhi_images(real_data, split="holdout", holdout_classes=["Serrated_adenoma"])
    held_cases = {im.case_id for im in held}
    assert any(im.cls == "Serrated_adenoma" for im in held)
    train = ebhi_images(real_data, split="not_test", holdout_classes=["Serrated_adenoma"])
    assert not held_cases & {im.case_id for im in train}
    assert not any(im.cls == "Serrated_adenoma" for im in train)
