"""The bad-input matrix: every user mistake gets a specific error that says what to fix.

Each row is a :class:`Case`: a mistake (``run`` does it, given a :class:`Ctx` with a fresh
folder, a small slide and ``monkeypatch``), the exact exception class it must raise (or the
warning it must issue) and a phrase (regular expression) its message must contain. Rows are
grouped by area in plain lists; :data:`AREAS` collects them and one parametrised test runs
them all, with ids ``area/case``.

To add an area (clinical tables, checkpoints, the click engine …): write a list of ``Case``
rows below the others and add it to :data:`AREAS`. CLI rows (exit code and stderr instead of
an exception) go in :data:`CLI_CASES`, run by ``test_cli_bad_input``.
"""

from __future__ import annotations

import errno
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from workbench import (
    GeoJSONError,
    InvalidImageError,
    InvalidRegionError,
    MissingResolutionError,
    NotBrightfieldWarning,
    SlideOpenError,
    WorkbenchError,
)
from workbench._errors import InvalidViewError
from workbench.io import (
    Annotation,
    OutputWriteError,
    Slide,
    annotations_to_mask,
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    read_geojson,
    write_geojson,
    write_h5ad,
)


# ----------------------------------------------------------------------------- the frame
@dataclass
class Ctx:
    """What a case may use: a fresh folder, a small slide file, monkeypatch, the real data."""

    tmp: Path
    monkeypatch: pytest.MonkeyPatch
    slide_path: Path
    _request: pytest.FixtureRequest = field(repr=False)

    def slide(self, **kwargs) -> Slide:
        """The 800 × 600, 3-level pyramidal TIFF (0.5 µm/px)."""
        return Slide(self.slide_path, **kwargs)

    def array_slide(self, **kwargs) -> Slide:
        """An in-memory 800 × 600 slide without a resolution."""
        return Slide.from_array(np.full((600, 800, 3), 200, np.uint8), **kwargs)

    @property
    def real(self) -> Path:
        """The shared real data folder; the case is skipped without it."""
        return self._request.getfixturevalue("real_data")

    def write(self, name: str, content: str | bytes | object) -> Path:
        p = self.tmp / name
        if isinstance(content, bytes):
            p.write_bytes(content)
        elif isinstance(content, str):
            p.write_text(content)
        else:
            p.write_text(json.dumps(content))
        return p


@dataclass(frozen=True)
class Case:
    id: str
    run: Callable[[Ctx], object]
    raises: type[BaseException] | type[Warning]
    match: str


@dataclass(frozen=True)
class CliCase:
    """A CLI mistake: ``argv`` (``{tmp}`` is replaced by a fresh folder), exit code, stderr phrase."""

    id: str
    argv: tuple[str, ...]
    exit_code: int
    match: str
    # written under {tmp} first: text, bytes, ("link", target) for a symbolic link, or a
    # function that writes the file at the path it is given
    files: dict[str, object] = field(default_factory=dict)


@pytest.fixture(scope="module")
def small_slide(tmp_path_factory) -> Path:
    import tifffile

    rows, cols = np.mgrid[0:600, 0:800]
    img = np.stack([cols % 256, rows % 256, (rows + cols) % 256], axis=-1).astype(np.uint8)
    path = tmp_path_factory.mktemp("bad_inputs") / "small.tif"
    with tifffile.TiffWriter(path) as tif:
        for i in range(3):
            res = 1e4 / (0.5 * 2**i)
            tif.write(
                img[:: 2**i, :: 2**i],
                tile=(64, 64),
                compression="jpeg",
                photometric="rgb",
                resolution=(res, res),
                resolutionunit="CENTIMETER",
                subfiletype=0 if i == 0 else 1,
            )
    return path


# ----------------------------------------------------------------------------- slides
def _truncated(ctx: Ctx, fraction: float) -> Slide:
    data = ctx.slide_path.read_bytes()
    return Slide(ctx.write("cut.tif", data[: int(len(data) * fraction)]))


def _closed(ctx: Ctx):
    s = ctx.slide()
    s.close()
    return s.read_region((0, 0), (8, 8))


def _real_truncated(ctx: Ctx):
    data = (ctx.real / "slides" / "CMU-1-Small-Region.svs").read_bytes()
    return Slide(ctx.write("cut.svs", data[: len(data) // 2]))


def _single_level(ctx: Ctx) -> Slide:
    """A copy of the small slide's level 0 without a pyramid, read under a decode limit
    lowered to 100,000 pixels (as a 200,000² single-level slide meets the default one)."""
    import tifffile

    with Slide(ctx.slide_path) as s:
        img = s.read_region((0, 0), s.dimensions)
    path = ctx.tmp / "flat.tif"
    tifffile.imwrite(path, img, tile=(64, 64), compression="jpeg", photometric="rgb",
                     resolution=(2e4, 2e4), resolutionunit="CENTIMETER")  # fmt: skip
    ctx.monkeypatch.setattr(Slide, "max_decode_pixels", 100_000)
    return Slide(path)


SLIDE_CASES = [
    Case(
        "no-pyramid-thumbnail",
        lambda c: _single_level(c).thumbnail(max_size=64),
        InvalidRegionError,
        "decode 480,000 pixels of flat.tif because the file has no pyramid.*vips tiffsave "
        "flat.tif flat_pyramid.tif --tile --pyramid.*QuPath",
    ),
    Case(
        "no-pyramid-coarse-region",
        lambda c: _single_level(c).read_region((0, 0), (50, 50), mpp=8.0),
        InvalidRegionError,
        "a 50 × 50 px region would decode 480,000 pixels.*no pyramid.*max_decode_pixels",
    ),
    Case("missing-file", lambda c: Slide(c.tmp / "nope.svs"), SlideOpenError, "no such file"),
    Case("empty-file", lambda c: Slide(c.write("e.svs", b"")), SlideOpenError, "empty \\(0 bytes"),
    Case(
        "text-named-svs",
        lambda c: Slide(c.write("notes.svs", "patient 7, see slide\n")),
        SlideOpenError,
        "not a TIFF-based slide",
    ),
    Case(
        "html-error-page-named-ndpi",
        lambda c: Slide(c.write("x.ndpi", "<html><body>404 Not Found</body></html>")),
        SlideOpenError,
        "download error page",
    ),
    Case("folder-not-file", lambda c: Slide(c.tmp), SlideOpenError, "a folder, not a slide"),
    Case(
        "unsupported-format",
        lambda c: Slide(c.write("x.xyz", b"\x00" * 100)),
        SlideOpenError,
        "unsupported or unrecognised format",
    ),
    Case(
        "plain-png",
        lambda c: Slide(c.write("x.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)),
        SlideOpenError,
        "unsupported",
    ),
    Case(
        "tiff-header-only",
        lambda c: Slide(c.write("h.tif", b"II*\x00\x00\x10\x00\x00")),
        SlideOpenError,
        "truncated",
    ),
    Case("truncated-half", lambda c: _truncated(c, 0.5), SlideOpenError, "truncated|damaged"),
    Case("truncated-90pc", lambda c: _truncated(c, 0.9), SlideOpenError, "truncated|damaged"),
    Case(
        "no-mpp-read-at-mpp",
        lambda c: c.array_slide().read_region((0, 0), (8, 8), mpp=1.0),
        MissingResolutionError,
        "does not record its resolution",
    ),
    Case(
        "no-mpp-thumbnail-at-mpp",
        lambda c: c.array_slide().thumbnail(mpp=8.0),
        MissingResolutionError,
        "Slide\\(path, mpp=0.5\\)",
    ),
    Case(
        "oversize-region",
        lambda c: c.slide().read_region((0, 0), (100_000, 100_000)),
        InvalidRegionError,
        "exceeds the read limit.*read it in tiles",
    ),
    Case(
        "oversize-region-at-mpp",
        lambda c: c.slide().read_region((0, 0), (20_000, 20_000), mpp=100.0),
        InvalidRegionError,
        "read it in tiles",
    ),
    Case(
        "oversize-thumbnail",
        lambda c: c.slide().thumbnail(mpp=0.01),
        InvalidRegionError,
        "ask for a coarser mpp",
    ),
    Case(
        "over-own-slide-limit",
        lambda c: c.slide(max_region_pixels=1000).read_region((0, 0), (100, 100)),
        InvalidRegionError,
        "limit of 1,000 pixels",
    ),
    Case(
        "zero-width",
        lambda c: c.slide().read_region((0, 0), (0, 10)),
        InvalidRegionError,
        "size must be positive",
    ),
    Case(
        "negative-height",
        lambda c: c.slide().read_region((0, 0), (10, -5)),
        InvalidRegionError,
        "size must be positive",
    ),
    Case(
        "fully-outside-right",
        lambda c: c.slide().read_region((900, 0), (10, 10)),
        InvalidRegionError,
        "outside the slide",
    ),
    Case(
        "fully-outside-negative",
        lambda c: c.slide().read_region((-50, -50), (20, 20)),
        InvalidRegionError,
        "outside the slide.*level-0 pixels",
    ),
    Case(
        "fully-outside-at-mpp",
        lambda c: c.slide().read_region((5000, 5000), (10, 10), mpp=2.0),
        InvalidRegionError,
        "outside the slide",
    ),
    Case(
        "nan-location",
        lambda c: c.slide().read_region((float("nan"), 0), (10, 10)),
        InvalidRegionError,
        "location_xy must be two finite numbers",
    ),
    Case(
        "infinite-location",
        lambda c: c.slide().read_region((0, float("inf")), (10, 10)),
        InvalidRegionError,
        "finite",
    ),
    Case(
        "three-number-location",
        lambda c: c.slide().read_region((1, 2, 3), (10, 10)),
        InvalidRegionError,
        "location_xy must be two numbers",
    ),
    Case(
        "nan-size",
        lambda c: c.slide().read_region((0, 0), (float("nan"), 10)),
        InvalidRegionError,
        "size_xy must be two finite",
    ),
    Case(
        "missing-level",
        lambda c: c.slide().read_region((0, 0), (8, 8), level=9),
        InvalidRegionError,
        "level 9 does not exist.*levels 0..2",
    ),
    Case(
        "mpp-and-level",
        lambda c: c.slide().read_region((0, 0), (8, 8), mpp=1.0, level=1),
        InvalidRegionError,
        "either mpp= or level=",
    ),
    Case(
        "negative-mpp",
        lambda c: c.slide().read_region((0, 0), (8, 8), mpp=-1.0),
        InvalidRegionError,
        "mpp must be a positive number",
    ),
    Case(
        "zero-pixel-limit",
        lambda c: c.slide().read_region((0, 0), (8, 8), max_pixels=0),
        InvalidRegionError,
        "pixel limit must be a positive integer",
    ),
    Case("closed-slide", _closed, SlideOpenError, "was closed; open it again"),
    Case(
        "thumbnail-without-size",
        lambda c: c.slide().thumbnail(),
        InvalidRegionError,
        "exactly one of mpp= or max_size=",
    ),
    Case(
        "thumbnail-max-size-zero",
        lambda c: c.slide().thumbnail(max_size=0),
        InvalidRegionError,
        "max_size must be a positive",
    ),
    Case(
        "real-tcga-without-mpp",
        lambda c: Slide(c.real / "slides" / "tcga-cr-7395-01a-01-ts1.svs").read_region(
            (0, 0), (64, 64), mpp=2.0
        ),
        MissingResolutionError,
        "Slide\\(path, mpp=",
    ),
    Case("real-truncated-svs", _real_truncated, SlideOpenError, "truncated"),
]


# ----------------------------------------------------------------------------- GeoJSON
def _feat(coords, gtype="Polygon", fid="f1", **props) -> dict:
    return {
        "type": "Feature",
        "id": fid,
        "geometry": {"type": gtype, "coordinates": coords},
        "properties": {"name": "lesion B", **props},
    }


SQUARE = [[[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]]
BOW_TIE = [[[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]]]


def _read(obj, **kwargs):
    """A case that reads ``obj`` (text, or JSON-able) from a file."""

    def run(ctx: Ctx):
        return read_geojson(ctx.write("in.geojson", obj), **kwargs)

    return run


def _fc(*features) -> dict:
    return {"type": "FeatureCollection", "features": list(features)}


def _raw_polygon(coords_text: str) -> str:
    """A FeatureCollection whose one polygon has coordinates written as raw JSON text."""
    return (
        '{"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": '
        f'{{"type": "Polygon", "coordinates": {coords_text}}}, "properties": {{}}}}]}}'
    )


def _write_ann(geometry: dict, **kwargs):
    def run(ctx: Ctx):
        return write_geojson(ctx.tmp / "out.geojson", [Annotation(geometry, **kwargs)])

    return run


def _rasterise_nan(ctx: Ctx):
    ring = [[0, 0], [5, float("nan")], [5, 5], [0, 0]]
    return annotations_to_mask([Annotation({"type": "Polygon", "coordinates": [ring]})], (8, 8))


GEOJSON_CASES = [
    Case("missing-file", lambda c: read_geojson(c.tmp / "no.geojson"), GeoJSONError, "no GeoJSON"),
    Case("not-json", _read("not json at all"), GeoJSONError, "not valid JSON"),
    Case("empty-file", _read(""), GeoJSONError, "not valid JSON"),
    Case(
        "binary-file",
        lambda c: read_geojson(c.write("b.geojson", b"\xff\xfe\x00")),
        GeoJSONError,
        "not valid JSON",
    ),
    Case(
        "bare-geometry",
        _read({"type": "Polygon", "coordinates": SQUARE}),
        GeoJSONError,
        "neither a FeatureCollection",
    ),
    Case(
        "features-null",
        _read({"type": "FeatureCollection", "features": None}),
        GeoJSONError,
        "'features' is null",
    ),
    Case(
        "features-object",
        _read({"type": "FeatureCollection", "features": {"a": 1}}),
        GeoJSONError,
        "must be a list of Feature objects",
    ),
    Case(
        "feature-wrong-type",
        _read([{"type": "Nope"}]),
        GeoJSONError,
        "feature 0: expected a GeoJSON Feature",
    ),
    Case("feature-is-a-number", _read(_fc(7)), GeoJSONError, "expected a GeoJSON Feature"),
    Case(
        "geometry-null",
        _read([{"type": "Feature", "geometry": None}]),
        GeoJSONError,
        "has no geometry \\(null\\)",
    ),
    Case(
        "geometry-circle",
        _read([_feat(SQUARE, "Circle")]),
        GeoJSONError,
        "unsupported geometry 'Circle'",
    ),
    Case(
        "geometry-collection",
        _read([_feat([], "GeometryCollection")]),
        GeoJSONError,
        "unsupported geometry",
    ),
    Case(
        "no-coordinates",
        _read([{"type": "Feature", "geometry": {"type": "Polygon"}}]),
        GeoJSONError,
        "has no coordinates",
    ),
    Case(
        "numeric-coordinates",
        _read([_feat(5)]),
        GeoJSONError,
        "coordinates must be a list of rings, got 5",
    ),
    Case("string-coordinates", _read([_feat("0,0 1,1")]), GeoJSONError, "must be a list of rings"),
    Case(
        "nested-10000-deep",
        _read(_raw_polygon("[" * 10_000 + "]" * 10_000)),
        GeoJSONError,
        "nested too deeply to read",
    ),
    Case(
        "nested-50-deep",
        _read(_raw_polygon("[" * 50 + "1" + "]" * 50)),
        GeoJSONError,
        "is nested too deeply",
    ),
    Case(
        "polygon-one-level-short",
        _read([_feat(SQUARE[0])]),
        GeoJSONError,
        "coordinates\\[0\\]\\[0\\] must be a position",
    ),
    Case(
        "multipolygon-with-polygon-coords",
        _read([_feat(SQUARE, "MultiPolygon")]),
        GeoJSONError,
        "a MultiPolygon's coordinates look like",
    ),
    Case(
        "nan-coordinate",
        _read(_raw_polygon("[[[0, 0], [NaN, 1], [1, 1], [0, 0]]]")),
        GeoJSONError,
        "coordinates\\[0\\]\\[1\\] = \\[nan, 1.0\\] is not finite",
    ),
    Case(
        "infinity-coordinate",
        _read(_raw_polygon("[[[0, 0], [Infinity, 1], [1, 1], [0, 0]]]")),
        GeoJSONError,
        "not finite",
    ),
    Case(
        "minus-infinity-coordinate",
        _read(_raw_polygon("[[[0, 0], [1, -Infinity], [1, 1], [0, 0]]]")),
        GeoJSONError,
        "not finite",
    ),
    Case(
        "1e308-coordinate",
        _read([_feat([[[0, 0], [1e308, 1], [1, 1], [0, 0]]])]),
        GeoJSONError,
        "lies beyond ±10,000,000 pixels",
    ),
    Case(
        "1e400-coordinate",
        _read(_raw_polygon("[[[0, 0], [1e400, 1], [1, 1], [0, 0]]]")),
        GeoJSONError,
        "not finite",
    ),
    Case(
        "huge-integer-coordinate",
        _read(_raw_polygon("[[[0, 0], [1" + "0" * 400 + ", 1], [1, 1], [0, 0]]]")),
        GeoJSONError,
        "lies beyond",
    ),
    Case(
        "text-coordinate",
        _read([_feat([[["0", "0"], [1, 0], [1, 1], ["0", "0"]]])]),
        GeoJSONError,
        "holds something other than numbers",
    ),
    Case(
        "boolean-coordinate",
        _read([_feat([[[True, 0], [1, 0], [1, 1], [True, 0]]])]),
        GeoJSONError,
        "other than numbers",
    ),
    Case(
        "null-coordinate",
        _read([_feat([[[None, 0], [1, 0], [1, 1], [None, 0]]])]),
        GeoJSONError,
        "other than numbers",
    ),
    Case(
        "one-number-position",
        _read([_feat([[[0], [1, 0], [1, 1], [0]]])]),
        GeoJSONError,
        "must be a position \\[x, y\\]",
    ),
    Case(
        "four-number-position",
        _read([_feat([[[0, 0, 0, 0], [1, 0], [1, 1], [0, 0]]])]),
        GeoJSONError,
        "must be a position",
    ),
    Case(
        "open-ring",
        _read([_feat([[[0, 0], [9, 0], [9, 9], [0, 9]]])]),
        GeoJSONError,
        "is not closed.*repair=True",
    ),
    Case(
        "three-position-ring",
        _read([_feat([[[0, 0], [9, 0], [0, 0]]])]),
        GeoJSONError,
        "has 3 position\\(s\\); a ring needs at least 4",
    ),
    Case(
        "empty-polygon",
        _read([_feat([])]),
        GeoJSONError,
        "is empty; a Polygon needs at least one ring",
    ),
    Case("empty-ring", _read([_feat([[]])]), GeoJSONError, "has 0 position"),
    Case(
        "bow-tie",
        _read(_fc(_feat(SQUARE, fid="ok"), _feat(BOW_TIE, fid="x"))),
        GeoJSONError,
        "feature 1 \\(id 'x', name 'lesion B'\\): the outline is not a valid polygon \\(Self-intersection",
    ),
    Case(
        "ring-self-touch",
        _read([_feat([[[0, 0], [4, 0], [4, 4], [2, 0], [0, 4], [0, 0]]])]),
        GeoJSONError,
        "Ring Self-intersection",
    ),
    Case(
        "hole-outside-shell",
        _read([_feat([SQUARE[0], [[20, 20], [21, 20], [21, 21], [20, 20]]])]),
        GeoJSONError,
        "Hole lies outside shell",
    ),
    Case(
        "overlapping-multipolygon",
        _read([_feat([SQUARE, [[[5, 5], [15, 5], [15, 15], [5, 15], [5, 5]]]], "MultiPolygon")]),
        GeoJSONError,
        "not a valid polygon",
    ),
    Case(
        "collinear-repair-leaves-nothing",
        _read([_feat([[[0, 0], [1, 1], [2, 2], [0, 0]]])], repair=True),
        GeoJSONError,
        "nothing with an area is left",
    ),
    Case(
        "linestring-one-point",
        _read([_feat([[0, 0]], "LineString")]),
        GeoJSONError,
        "LineString needs at least 2 positions",
    ),
    Case(
        "point-one-number",
        _read([_feat([1], "Point")]),
        GeoJSONError,
        "Point's coordinates must be \\[x, y\\]",
    ),
    Case(
        "properties-a-list",
        _read(
            [
                {
                    "type": "Feature",
                    "geometry": {"type": "Point", "coordinates": [1, 2]},
                    "properties": [1],
                }
            ]
        ),
        GeoJSONError,
        "properties must be an object",
    ),
    Case(
        "classification-a-number",
        _read([_feat(SQUARE, classification=3)]),
        GeoJSONError,
        "classification must be",
    ),
    Case(
        "colour-a-word",
        _read([_feat(SQUARE, classification={"name": "T", "color": "red"})]),
        GeoJSONError,
        "color must be \\[r, g, b\\]",
    ),
    Case(
        "colour-out-of-range",
        _read([_feat(SQUARE, classification={"name": "T", "color": [300, 0, 0]})]),
        GeoJSONError,
        "numbers 0-255",
    ),
    Case(
        "measurement-text",
        _read([_feat(SQUARE, measurements={"area": "big"})]),
        GeoJSONError,
        "measurement 'area' is 'big'",
    ),
    Case(
        "measurements-text",
        _read([_feat(SQUARE, measurements="area=5")]),
        GeoJSONError,
        "measurements must be a mapping",
    ),
    Case(
        "object-type-number",
        _read([_feat(SQUARE, objectType=1)]),
        GeoJSONError,
        "objectType must be text",
    ),
    Case(
        "write-nan",
        _write_ann(
            {"type": "Polygon", "coordinates": [[[0, 0], [1, float("nan")], [1, 1], [0, 0]]]}
        ),
        GeoJSONError,
        "annotation 0: coordinates\\[0\\]\\[1\\].*not finite",
    ),
    Case(
        "write-bow-tie",
        _write_ann({"type": "Polygon", "coordinates": BOW_TIE}, name="mine"),
        GeoJSONError,
        "annotation 0 \\(name 'mine'\\).*Self-intersection",
    ),
    Case(
        "write-open-ring",
        _write_ann({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1]]]}),
        GeoJSONError,
        "is not closed",
    ),
    Case("rasterise-nan", _rasterise_nan, GeoJSONError, "NaN or infinite coordinate"),
]


# ----------------------------------------------------------------------------- atomic writes
def _fail_replace(err: int, text: str):
    def run(ctx: Ctx):
        import workbench.io._atomic as atomic

        def replace(src, dst):
            raise OSError(err, text, str(dst))

        ctx.monkeypatch.setattr(atomic.os, "replace", replace)
        return atomic_write_text(ctx.tmp / "r.json", "{}")

    return run


def _full_disk_in_writer(err: int):
    def run(ctx: Ctx):
        class FullDisk:  # what h5py does when the disk fills up mid-write
            def write_h5ad(self, path):
                Path(path).write_bytes(b"\x89HDF\r\n\x1a\n partial")
                raise OSError(err, "No space left on device")

        return write_h5ad(FullDisk(), ctx.tmp / "S000.h5ad")

    return run


def _read_only(ctx: Ctx):
    import workbench.io._atomic as atomic

    ctx.monkeypatch.setattr(atomic.os, "access", lambda path, mode: False)  # root writes anyway
    return atomic_write_bytes(ctx.tmp / "x.bin", b"data")


def _mkdir_refused(ctx: Ctx):
    def mkdir(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    ctx.monkeypatch.setattr(Path, "mkdir", mkdir)
    return atomic_write_text(ctx.tmp / "new" / "run.json", "{}")


def _nothing_written(ctx: Ctx):
    with atomic_path(ctx.tmp / "x.bin") as tmp:
        tmp.unlink()


def _out_is_a_file(ctx: Ctx):
    return atomic_write_text(ctx.write("out", "a file") / "run.json", "{}")


def _discover_into_read_only(ctx: Ctx):
    """The output folder is checked before the slides are read or anything is computed."""
    import workbench._steps as steps

    (ctx.tmp / "slides").mkdir()  # empty: reading it first would fail with another error
    clinical = ctx.write("c.csv", "patient_id,slide,time,event\nP1,S1,5,1\n")
    ctx.monkeypatch.setattr(steps.os, "access", lambda path, mode: False)  # root writes anyway
    return steps.discover_step(ctx.tmp / "slides", clinical, ctx.tmp / "out")


ATOMIC_CASES = [
    Case(
        "discover-read-only-out",
        _discover_into_read_only,
        OutputWriteError,
        "the output folder '.*out' is not writable; choose a writable location",
    ),
    Case("folder-is-a-file", _out_is_a_file, OutputWriteError, "is a file, not a folder"),
    Case(
        "parent-of-folder-is-a-file",
        lambda c: atomic_write_text(c.write("out", "x") / "a" / "b" / "r.json", "{}"),
        OutputWriteError,
        "'.*out' is a file, not a folder",
    ),
    Case(
        "target-is-a-folder",
        lambda c: atomic_write_text(c.tmp, "{}"),
        OutputWriteError,
        "is a folder, so a file of that name cannot be written",
    ),
    Case(
        "h5ad-into-a-file",
        lambda c: write_h5ad(object(), c.write("slides", "x") / "S1.h5ad"),
        OutputWriteError,
        "not a folder",
    ),
    Case(
        "geojson-onto-a-folder",
        lambda c: write_geojson(c.tmp, []),
        OutputWriteError,
        "is a folder",
    ),
    Case("read-only-folder", _read_only, OutputWriteError, "is not writable.*writable location"),
    Case("mkdir-refused", _mkdir_refused, OutputWriteError, "cannot create the folder"),
    Case(
        "disk-full",
        _full_disk_in_writer(errno.ENOSPC),
        OutputWriteError,
        "disk \\(or your quota\\) is full",
    ),
    Case(
        "quota-exceeded", _full_disk_in_writer(errno.EDQUOT), OutputWriteError, "quota\\) is full"
    ),
    Case(
        "rename-read-only-fs",
        _fail_replace(errno.EROFS, "Read-only file system"),
        OutputWriteError,
        "not writable",
    ),
    Case(
        "rename-denied",
        _fail_replace(errno.EACCES, "Permission denied"),
        OutputWriteError,
        "previous version, if any, is unchanged",
    ),
    Case(
        "rename-io-error",
        _fail_replace(errno.EIO, "Input/output error"),
        OutputWriteError,
        "Input/output error",
    ),
    Case("nothing-written", _nothing_written, OutputWriteError, "nothing was written"),
]


# ----------------------------------------------------------------------------- brightfield
def _check(image):
    def run(ctx: Ctx):
        from workbench.pp import check_brightfield

        return check_brightfield(image, name="S9", warn=True)

    return run


def _one_channel(channel: int) -> np.ndarray:
    rng = np.random.default_rng(channel)
    img = np.zeros((120, 160, 3), np.uint8)
    img[rng.random((120, 160)) < 0.3, channel] = 200
    return img


def _real_dapi(ctx: Ctx):
    from workbench.pp import check_brightfield

    with Slide(ctx.real / "slides" / "hamamatsu-dapi-7-levels.ndpi") as s:
        return check_brightfield(s, name="dapi", warn=True)


_GREY = np.tile(np.linspace(90, 250, 160, dtype=np.uint8), (120, 1))[..., None].repeat(3, 2)
_BROWN = np.full((120, 160, 3), 245, np.uint8)
_BROWN[30:90, 40:120] = (150, 100, 60)

BRIGHTFIELD_CASES = [
    Case(
        "dapi-like",
        _check(_one_channel(2)),
        NotBrightfieldWarning,
        "S9 does not look like brightfield H&E.*black",
    ),
    Case("fitc-like", _check(_one_channel(1)), NotBrightfieldWarning, "green channel carries"),
    Case("greyscale", _check(_GREY), NotBrightfieldWarning, "no colour"),
    Case("brown-dab", _check(_BROWN), NotBrightfieldWarning, "IHC/DAB"),
    Case("real-dapi-slide", _real_dapi, NotBrightfieldWarning, "blue channel carries 9\\d%"),
    Case("not-rgb", _check(np.zeros((10, 10), np.uint8)), InvalidImageError, "shape \\(10, 10\\)"),
    Case("float-image", _check(np.zeros((10, 10, 3), np.float64)), InvalidImageError, "uint8"),
    Case("empty-image", _check(np.zeros((0, 5, 3), np.uint8)), InvalidImageError, "empty"),
]


# ----------------------------------------------------------------------------- refinement views
def _nan_view(ctx: Ctx):
    from workbench.interactive import RefinementEngine

    image = np.full((64, 64, 3), 0.8)
    image[10:12, 5:9, 1] = np.nan
    return RefinementEngine(method="random_walker").set_view(image)


def _outline_outside(ctx: Ctx):
    from workbench.interactive import RefinementEngine, RefinementSession

    far = [[5000, 5000], [5100, 5000], [5100, 5100], [5000, 5100], [5000, 5000]]
    path = write_geojson(
        ctx.tmp / "other.geojson",
        [Annotation({"type": "Polygon", "coordinates": [far]}, classification="Tumor")],
    )
    s = RefinementSession(ctx.array_slide(mpp=0.5), geojson=path, output=ctx.tmp / "o.geojson",
                          engine=RefinementEngine(method="random_walker"), view_size=128)  # fmt: skip
    assert s.lesion is None and s.lesion_annotations() == []  # nothing to save back
    return s


VIEW_CASES = [
    Case("nan-pixels", _nan_view, InvalidViewError, r"8 pixel\(s\) that are NaN or infinite"),
    Case(
        "outline-outside-slide",
        _outline_outside,
        UserWarning,
        r"1 of 1 outline polygon\(s\) from .*other.geojson lie wholly outside the slide "
        r"\(800x600.*x 5000..5100.*not saved back",
    ),
]

# ----------------------------------------------------------------------------- all areas
AREAS: dict[str, list[Case]] = {
    "slide": SLIDE_CASES,
    "geojson": GEOJSON_CASES,
    "atomic": ATOMIC_CASES,
    "brightfield": BRIGHTFIELD_CASES,
    "view": VIEW_CASES,
}
ALL_CASES = [(area, case) for area, cases in AREAS.items() for case in cases]


_CSV = {"c.csv": "patient_id,slide,time,event\nP1,S1,10,1\n"}
_EMPTY = {"s/.keep": ""}  # a folder with nothing but a hidden file
_BOTH = {**_CSV, **_EMPTY}
_FILE = {"f.txt": "x"}
_TRUNCATED = {**_CSV, "s/S1.h5ad": "not hdf5"}
_PARTIAL_ONLY = {**_CSV, "s/.partial/S1.h5ad": "half"}
_TWO_FOLDERS = {"A/S000.tif": "slide a", "B/S000.tif": "slide b", "B/S001.tif": "c"}
_TWO_FORMATS = {"A/S000.tif": "slide a", "A/S000.svs": "slide b", "A/S001.tif": "c"}
_DANGLING = {"s/S1.tif": "x", "s/S2.svs": ("link", "{tmp}/gone/S2.svs")}
_LOOP = {"s/S1.tif": "x", "s/a.svs": ("link", "b.svs"), "s/b.svs": ("link", "a.svs")}
_UTF16 = {"s/S1.tif": "x", "c.csv": "patient_id,slide,grade\nP1,S1,1\n".encode("utf-16")}


def _plain_export(path: Path) -> None:
    """A tile encoder saved with plain torch.export: fixed 64-px input and batch, 3-D output."""
    import torch

    class Tokens(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.patch = torch.nn.Conv2d(3, 8, 16, stride=16)

        def forward(self, x):
            return self.patch(x).flatten(2).transpose(1, 2)

    torch.export.save(torch.export.export(Tokens(), (torch.zeros(1, 3, 64, 64),)), path)


_PLAIN_PT2 = {
    "s/S1.tif": "x",
    "s/S2.tif": "x",
    "c.csv": "patient_id,slide,grade\nP1,S1,1\nP2,S2,2\n",
    "plain.pt2": _plain_export,
}
_TRAILING = {
    "s/S1.tif": "x",
    "s/S2.tif": "x",
    "c.csv": "patient_id,slide,grade\nP1,S1,1\nP2,S2,2\n,,\n,,\n",
}


# 8 one-slide patients, 4 per class ('y' a/b); the "slides" are never opened: every requested
# split is checked before anything is read. _MIXED: patient P1 carries both labels.
_EIGHT = {"c8.csv": "patient_id,slide,y\n" + "".join(f"P{i},S{i},{'ab'[i % 2]}\n" for i in range(8)),
          **{f"s8/S{i}.tif": "x" for i in range(8)}}  # fmt: skip
_MIXED = {**_EIGHT, "c8.csv": _EIGHT["c8.csv"].replace("P2,S2,a", "P1,S2,a")}
_T8 = "train {tmp}/s8 --clinical {tmp}/c8.csv --label y --out {tmp}/m --no-progress"

#: Mistakes a user makes on the command line: each ends in one line on stderr and exit code 2.
#: (id, command line with ``{tmp}`` for a fresh folder, phrase of the error, files made first)
# fmt: off
_CLI_TABLE = [
    ("unknown-command", "frobnicate", "invalid choice", None),
    ("no-command", "", "required", None),
    ("demo-n-patients-0", "demo --n-patients 0", "at least 6", None),
    ("demo-n-patients-text", "demo --n-patients many", "not a whole number", None),
    ("demo-epochs-0", "demo --epochs 0", "at least 1", None),
    ("demo-seed-negative", "demo --seed -1", "at least 0", None),
    ("demo-out-is-file", "demo --out {tmp}/f.txt", "is a file", _FILE),
    ("demo-out-inside-file", "demo --out {tmp}/f.txt/run", "is a file", _FILE),
    ("cohort-out-is-file", "cohort {tmp}/f.txt", "is a file", _FILE),
    ("cohort-n-patients-0", "cohort {tmp}/c --n-patients 0", "at least 1", None),
    ("train-missing-slides", "train {tmp}/nothing --clinical {tmp}/c.csv --label grade", "no slide folder", _CSV),
    ("train-missing-clinical", "train {tmp}/s --clinical {tmp}/no.csv --label grade", "no clinical CSV", _EMPTY),
    ("train-clinical-is-folder", "train {tmp}/s --clinical {tmp}/s --label grade", "is a folder", _EMPTY),
    ("train-folds-1", "train {tmp}/s --clinical {tmp}/c.csv --label grade --folds 1", "at least 2", _BOTH),
    ("train-validation-1", "train {tmp}/s --clinical {tmp}/c.csv --label grade --validation 1", "between 0 and 1", _BOTH),
    ("train-no-slides", "train {tmp}/s --clinical {tmp}/c.csv --label grade", "no slide files", _BOTH),
    ("train-mpp-text", "train {tmp}/s --clinical {tmp}/c.csv --label grade --mpp fine", "µm per pixel", _BOTH),
    ("train-mpp-negative", "train {tmp}/s --clinical {tmp}/c.csv --label grade --mpp -0.5", "positive", _BOTH),
    ("train-validation-too-small", _T8 + " --validation 0.01", "--validation 0.01 holds out 1 in 100 patients of each class.*'a': 4, 'b': 4.*1 in 4.*--validation 0.25 or more", _EIGHT),
    ("train-folds-over-patients", _T8 + " --folds 9", "--folds 9 needs at least 9 patients.*there are 8.*--folds 8 or fewer", _EIGHT),
    ("train-repeats-0", _T8 + " --folds 2 --repeats 0", "at least 1", _EIGHT),
    ("train-repeats-without-folds", _T8 + " --repeats 3", "--repeats repeats the cross-validation: give --folds", _EIGHT),
    ("train-refit-without-validation", _T8 + " --refit", "--refit refits on all patients after --validation", _EIGHT),
    ("train-conflicting-labels", _T8 + " --folds 2", "1 patient.*carry conflicting 'y' labels.*P1 \\(a, b\\)", _MIXED),
    ("train-conflicting-option", _T8 + " --on-conflicting-labels keep", "invalid choice", _EIGHT),
    ("extract-missing-slides", "extract {tmp}/nothing --model {tmp} --out {tmp}/o", "no slide file or folder", None),
    ("extract-missing-model", "extract {tmp} --model {tmp}/m --out {tmp}/o", "no checkpoint folder", None),
    ("extract-top-k-0", "extract {tmp} --model {tmp} --out {tmp}/o --top-k 0", "at least 1", None),
    ("extract-workers-0", "extract {tmp} --model {tmp} --out {tmp}/o --workers 0", "at least 1", None),
    ("extract-timeout-0", "extract {tmp} --model {tmp} --out {tmp}/o --connect-timeout 0", "positive", None),
    ("extract-out-is-file", "extract {tmp} --model {tmp} --out {tmp}/f.txt", "is a file", _FILE),
    ("extract-no-slides", "extract {tmp}/s --model {tmp} --out {tmp}/o", "no slide files", _EMPTY),
    ("extract-same-id-two-folders", "extract {tmp}/A {tmp}/B --model {tmp} --out {tmp}/o", "S000: .*A/S000.tif, .*B/S000.tif", _TWO_FOLDERS),
    ("extract-same-id-two-formats", "extract {tmp}/A --model {tmp} --out {tmp}/o", "S000: .*S000.svs, .*S000.tif", _TWO_FORMATS),
    ("extract-dangling-link", "extract {tmp}/s --model {tmp} --out {tmp}/o", "S2.svs: a symbolic link to .*gone/S2.svs', which does not exist", _DANGLING),
    ("extract-link-loop", "extract {tmp}/s --model {tmp} --out {tmp}/o", "a.svs: a symbolic link loop; b.svs: a symbolic link loop", _LOOP),
    ("train-dangling-link", "train {tmp}/s --clinical {tmp}/c.csv --label grade", "S2.svs: a symbolic link to", {**_DANGLING, **_CSV}),
    ("train-clinical-utf16", "train {tmp}/s --clinical {tmp}/c.csv --label grade", "UTF-16.*save it as UTF-8 CSV", _UTF16),
    ("train-clinical-trailing-empty-rows", "train {tmp}/s --clinical {tmp}/c.csv --label stage", "no label column 'stage'", _TRAILING),
    ("train-plain-export-encoder", "train {tmp}/s --clinical {tmp}/c.csv --label grade --encoder {tmp}/plain.pt2 --out {tmp}/m", "plain.pt2' was exported for a fixed batch of 1 .*\\(B, 3, S, S\\)", _PLAIN_PT2),
    ("discover-missing-folder", "discover {tmp}/nothing {tmp}/c.csv --out {tmp}/o", "no folder of per-slide .h5ad", _CSV),
    ("discover-empty-folder", "discover {tmp}/s {tmp}/c.csv --out {tmp}/o", "no .h5ad files", _BOTH),
    ("discover-truncated-h5ad", "discover {tmp}/s {tmp}/c.csv --out {tmp}/o", "truncated or not an .h5ad", _TRUNCATED),
    ("discover-only-partial", "discover {tmp}/s {tmp}/c.csv --out {tmp}/o", "no .h5ad files", _PARTIAL_ONLY),
    ("discover-missing-clinical", "discover {tmp}/s {tmp}/no.csv --out {tmp}/o", "no clinical CSV", _EMPTY),
    ("discover-out-is-file", "discover {tmp}/s {tmp}/c.csv --out {tmp}/c.csv", "is a file", _BOTH),
    ("discover-fraction-2", "discover {tmp}/s {tmp}/c.csv --out {tmp}/o --validation-fraction 2", "between 0 and 1", _BOTH),
    ("discover-folds-1", "discover {tmp}/s {tmp}/c.csv --out {tmp}/o --folds 1", "at least 2", _BOTH),
    ("report-missing-run", "report {tmp}/nothing", "no run folder", None),
    ("report-run-is-file", "report {tmp}/f.txt", "is a file", _FILE),
    ("report-empty-folder", "report {tmp}/e", "e' holds none of the files a report shows \\(run.json", {"e/.keep": ""}),
    ("report-only-partial-files", "report {tmp}/e", "holds none of the files", {"e/.partial/run.json": "{"}),
    ("report-out-is-folder", "report {tmp} --out {tmp}", "is a folder", None),
    ("report-examples-negative", "report {tmp} --examples -1", "at least 0", None),
]
# fmt: on
CLI_CASES: list[CliCase] = [
    CliCase(id_, tuple(cmd.split()), 2, match, dict(files or {}))
    for id_, cmd, match, files in _CLI_TABLE
]


@pytest.mark.parametrize(
    "area,case", ALL_CASES, ids=[f"{area}/{case.id}" for area, case in ALL_CASES]
)
def test_bad_input(area, case, tmp_path, monkeypatch, small_slide, request):
    ctx = Ctx(tmp=tmp_path, monkeypatch=monkeypatch, slide_path=small_slide, _request=request)
    if issubclass(case.raises, Warning):
        with pytest.warns(case.raises, match=case.match):
            case.run(ctx)
        return
    with pytest.raises(case.raises, match=case.match) as info:
        case.run(ctx)
    assert type(info.value) is case.raises, f"{type(info.value).__name__}: {info.value}"
    assert isinstance(info.value, WorkbenchError)


if CLI_CASES:  # defined once the CLI room has rows, so an empty list is not a skipped test

    @pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
    def test_cli_bad_input(case, tmp_path, capsys):
        import re

        from workbench.cli import main

        for name, content in case.files.items():
            path = tmp_path / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if callable(content):  # writes the file itself
                content(path)
            elif isinstance(content, tuple):  # ("link", target): a symbolic link
                path.symlink_to(content[1].replace("{tmp}", str(tmp_path)))
            elif isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        code = main([a.replace("{tmp}", str(tmp_path)) for a in case.argv])
        err = capsys.readouterr().err
        assert code == case.exit_code, err
        assert re.search(case.match, err), err
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1, f"not one line: {err!r}"
        assert "Traceback" not in err


def test_the_matrix_is_large_and_its_ids_are_unique():
    ids = [f"{area}/{case.id}" for area, case in ALL_CASES]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 60
