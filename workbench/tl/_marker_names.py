"""Plain sentences for the spatial marker names that :func:`workbench.tl.spatial` makes.

Every marker is named ``"<kind>:<phenotype>[|lesion][@<d>um]"`` (see
:func:`workbench.tl._spatial.marker_names`, where the names are formed). A report reader sees
``nhood_z:phenotype_2|lesion`` in a table; :func:`describe_marker` turns it into one sentence
a pathologist can read without the code. A kind added to ``tl.spatial`` gets its sentence here.
"""

from __future__ import annotations

import re

from workbench.tl._markers import OTHER

#: One sentence per marker kind; ``{p}`` is the phenotype's regions as read ("phenotype 2
#: regions"), ``{q}`` the label itself ("phenotype 2"), ``{d}`` a distance ("250 µm").
_SENTENCES = {
    "abundance": "Share of all tissue regions of the slide that are {q}.",
    "lesion_share": "Share of the {p} that lie inside the lesion.",
    "boundary_share": "Share of the {p} that lie on the lesion margin (the band of regions "
    "along the lesion border, on both sides).",
    "boundary_density": "Share of the lesion margin's regions that are {q} (how densely {p} "
    "line the margin, e.g. infiltration of the invasive front).",
    "nhood_z": "How much more often {p} outside the lesion touch lesion regions than if the "
    "labels were shuffled (neighbourhood-enrichment z-score; above 0: they crowd the lesion).",
    "cooc": "How much likelier a region within {d} of {p} is lesion than any region of the "
    "slide is (co-occurrence ratio; above 1: {p} sit near the lesion).",
    "moran": "How patchy the {p} are: Moran's I of the label '{q}' over neighbouring "
    "regions (near 0: scattered at random; towards 1: in patches).",
    "ripley_L": "Whether {p} cluster at a fixed radius more than random placement would "
    "(Ripley's L minus its value under random placement; compare across slides, not with 0).",
}

_NAME = re.compile(
    r"^(?P<kind>[A-Za-z_]+):(?P<phenotype>[^|@]+)(?:\|(?P<ctx>[^@]+))?(?:@(?P<d>.+))?$"
)


def _phenotype_words(phenotype: str) -> tuple[str, str]:
    """(the regions, the label) as read: ("phenotype 2 regions", "phenotype 2")."""
    if phenotype == OTHER:
        return "regions that match no phenotype", "of no phenotype"
    match = re.fullmatch(r"phenotype_(\d+)", phenotype)
    label = f"phenotype {match.group(1)}" if match else phenotype
    return f"{label} regions", label


def _distance_words(d: str | None) -> str:
    if not d:
        return "a set distance"
    match = re.fullmatch(r"([0-9.]+)um", d)
    return f"{match.group(1)} µm" if match else d


def describe_marker(name: str) -> str:
    """One plain sentence saying what a spatial marker measures.

    Parameters
    ----------
    name
        A marker name as :func:`workbench.tl.spatial` writes it, e.g.
        ``"nhood_z:phenotype_2|lesion"``, ``"cooc:phenotype_1|lesion@250um"``,
        ``"moran:phenotype_3"`` or ``"boundary_density:other"``.

    Returns
    -------
    str
        The sentence. A name that does not follow ``tl.spatial``'s pattern (a clinical
        column, a marker made elsewhere) gets a sentence saying so rather than an error, so
        a report can describe every row of any marker table.
    """
    match = _NAME.match(str(name))
    if match is None or match.group("kind") not in _SENTENCES:
        return f"A per-patient value named {name!r}; it is not one of tl.spatial's markers."
    p, q = _phenotype_words(match.group("phenotype").strip())
    return _SENTENCES[match.group("kind")].format(p=p, q=q, d=_distance_words(match.group("d")))
