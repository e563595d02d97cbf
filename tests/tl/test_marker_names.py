"""tl.describe_marker: one plain sentence for every name tl.spatial makes."""

from __future__ import annotations

from workbench import tl
from workbench.tl._spatial import FAMILIES, marker_names


def test_every_spatial_marker_name_gets_its_own_sentence():
    names = marker_names(["phenotype_1", "phenotype_2", "other"], families=FAMILIES)
    sentences = [tl.describe_marker(n) for n in names]
    assert all("not one of tl.spatial" not in s for s in sentences)
    assert len(set(sentences)) == len(names)  # no two names read the same
    assert all(s.endswith(".") and "_" not in s.split("(")[0] for s in sentences)


def test_sentences_carry_the_phenotype_and_the_distance():
    s = tl.describe_marker("cooc:phenotype_2|lesion@250um")
    assert "phenotype 2" in s and "250 µm" in s and "lesion" in s
    assert "phenotype 3" in tl.describe_marker("nhood_z:phenotype_3|lesion")
    assert "no phenotype" in tl.describe_marker("moran:other")
    assert "Ripley" in tl.describe_marker("ripley_L:phenotype_1")


def test_a_name_from_elsewhere_is_said_to_be_so():
    assert "not one of tl.spatial" in tl.describe_marker("age")
    assert "not one of tl.spatial" in tl.describe_marker("mystery:phenotype_1")
