"""A spatial index over the parts of an outline, so a view clips only what it overlaps.

An outline made from a full QuPath export, or refined over many glands, can hold thousands of
polygons; clipping all of them to every view the user opens costs time proportional to the
whole slide. :func:`clip_to_box` keeps a shapely ``STRtree`` of the outline's polygons (built
once per outline) and clips only the polygons whose boxes meet the view.
"""

from __future__ import annotations

__all__ = ["OutlineIndex", "clip_to_box"]


class OutlineIndex:
    """The polygons of a (multi)polygon geometry in a shapely ``STRtree``.

    Parameters
    ----------
    geometry
        A shapely geometry in level-0 pixels (its parts are indexed).
    """

    def __init__(self, geometry) -> None:
        from shapely import STRtree

        self.geometry = geometry
        self.parts = list(getattr(geometry, "geoms", [geometry]))
        self.tree = STRtree(self.parts)

    def clip(self, box):
        """The geometry inside ``box`` (a shapely polygon): only the parts that meet it are
        clipped and joined.

        Returns
        -------
        shapely.geometry.base.BaseGeometry
            A shapely geometry (empty when nothing lies in the box).
        """
        from shapely import GeometryCollection
        from shapely.ops import unary_union

        hits = self.tree.query(box, predicate="intersects")
        if len(hits) == 0:
            return GeometryCollection()
        if len(hits) == 1:
            return self.parts[int(hits[0])].intersection(box)
        return unary_union([self.parts[int(i)].intersection(box) for i in hits])


_LAST: list = [None]  # the index of the outline clipped last (one outline is open at a time)


def clip_to_box(geometry, box):
    """``geometry.intersection(box)``, through a spatial index of ``geometry``'s parts that is
    kept for the next call with the same geometry object.

    Parameters
    ----------
    geometry
        A shapely (multi)polygon.
    box
        A shapely polygon (the view's extent in level-0 pixels).

    Returns
    -------
    shapely.geometry.base.BaseGeometry
        The part of ``geometry`` inside ``box``.
    """
    if len(getattr(geometry, "geoms", ())) < 64:
        return geometry.intersection(box)  # few parts: the index would not pay
    index = _LAST[0]
    if index is None or index.geometry is not geometry:
        index = _LAST[0] = OutlineIndex(geometry)
    return index.clip(box)
