from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from workbench.io import canonical_json, fingerprint

# Recorded with the demo's own fingerprint before it moved here (workbench 0.1.0): the train
# step's inputs of a default demo run, as they stand in run.json.
DEMO_TRAIN_INPUTS = {
    "kind": "sew",
    "encoder": "builtin",
    "stain": None,
    "validation": None,
    "label": "grade_group",
    "classes": ["low grade (1-2)", "high grade (3)"],
    "epochs": 16,
    "seed": 0,
    "test_fraction": 0.33,
    "workbench": "0.1.0",
}
DEMO_TRAIN_FINGERPRINT = "492d864bfb72fc7948591daad93cd854f28a6175e973650280c703d8be2b3d1e"
MIXED = {"size": "tiny", "n": 36, "x": [1, 2.5, None, True], "u": "µm é"}
MIXED_FINGERPRINT = "2c7ccfb67f26b01315cb1ebdf4c2c2447b776c7deb5fbdc06e6cc48d48cc3102"


def test_fingerprint_matches_the_one_recorded_before_the_move():
    assert fingerprint(DEMO_TRAIN_INPUTS) == DEMO_TRAIN_FINGERPRINT
    assert fingerprint(MIXED) == MIXED_FINGERPRINT


def test_fingerprint_is_sha256_of_sorted_compact_json():
    text = json.dumps(MIXED, sort_keys=True, separators=(",", ":"))
    assert canonical_json(MIXED) == text
    assert fingerprint(MIXED) == hashlib.sha256(text.encode()).hexdigest()


def test_key_order_does_not_matter_and_values_do():
    a = {"b": 1, "a": {"y": 2, "x": 3}}
    b = {"a": {"x": 3, "y": 2}, "b": 1}
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint({"b": 1, "a": {"y": 2, "x": 4}})
    assert fingerprint(1) != fingerprint(1.0)  # "1" and "1.0" are different inputs


def test_numpy_values_and_settings_objects_are_written_as_plain_json():
    class Settings:
        def to_dict(self):
            return {"n_segments": 10}

    value = {"a": np.float32(0.5), "b": np.arange(3), "c": np.int64(7), "s": Settings()}
    assert canonical_json(value) == '{"a":0.5,"b":[0,1,2],"c":7,"s":{"n_segments":10}}'


def test_unwritable_value_is_refused_with_its_type():
    with pytest.raises(TypeError, match="cannot fingerprint a set"):
        fingerprint({"a": {1, 2}})


def test_demo_train_step_records_the_same_fingerprint_as_before(tmp_path):
    from workbench._demo import DemoRun, _train_step

    inputs = _train_step(DemoRun(root=tmp_path)).inputs()
    inputs["workbench"] = "0.1.0"  # the version the recorded fingerprint was made with
    assert inputs == DEMO_TRAIN_INPUTS
    assert fingerprint(inputs) == DEMO_TRAIN_FINGERPRINT
