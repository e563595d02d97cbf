"""Storage keys and option names shared across the package (one place to look them up)."""

from __future__ import annotations

# --- AnnData keys ------------------------------------------------------------------------
SPATIAL = "spatial"  # obsm: level-0 (x, y) pixel coordinates
ADJACENCY = "adjacency"  # obsp: symmetric 0/1 region adjacency
REGION_GRAPH = "region_graph"  # uns: labels, thumbnail, thumbnail_mpp, scale_xy, slide
TILING = "tiling"  # uns: tile grid parameters written by pp.tile_tissue
EXPLAIN = "explain"  # uns: slide probabilities, focus boxes, crops and lesion maps (tl.extract)
EXTRACT_FINGERPRINT = "extract_fingerprint"  # uns: model, settings, slide that made a file

# --- GeoJSON / QuPath classifications --------------------------------------------------------
LESION_CLASS = "Tumor"
LESION_COLOR = (200, 0, 0)
FOCUS_CLASS = "Focus region"
FOCUS_COLOR = (255, 200, 0)

# --- marker discovery (tl.markers / tl.spatial / tl.aggregate / tl.survival) -------------
X_FOCUS = "X_focus"  # obsm: focused discriminative features (node tokens) from tl.extract
LESION_PROB = "lesion_prob"  # obs: lesion probability per region from tl.extract
LESION_REFINED = "lesion_refined"  # obs: lesion call after click refinement (bool), if any
SLIDE_ID = "slide_id"  # uns: the slide's identifier (joins slides to the clinical table)
PHENOTYPE = "phenotype"  # obs: candidate phenotype per region, written by tl.markers
X_UNIQUENESS = "X_uniqueness"  # obsm: standardised PCA coordinates used by tl.markers
FEATURE_UNIQUENESS = "feature_uniqueness"  # uns: cluster table + fit summary (tl.markers)
SPATIAL_MARKERS = "spatial_markers"  # uns: per-slide marker table written by tl.spatial
SURVIVAL_SCREEN = "survival_screen"  # uns: per-marker Cox / log-rank / FDR table
SURVIVAL_CV = "survival_cv"  # uns: cross-validated concordance table
DISCOVERY_SPLIT = "discovery_split"  # obs column + uns record of discovery/validation patients
CLINICAL_REQUIRED = ("patient_id", "slide", "time", "event")  # clinical table columns
SITE = "site"  # clinical column: the site (batch: hospital, lab, scanner) of a slide
TCGA_SITE = "tcga"  # site_key value: derive the site from TCGA barcodes (tissue source site)
MARKER_FAMILIES = "marker_families"  # uns: families of strongly associated markers
MARKER_FAMILY = "marker_family"  # var column: the family a marker belongs to
SURVIVAL_FAMILIES = "survival_families"  # uns: the screen with one row per marker family
PHENOTYPE_EXEMPLARS = "phenotype_exemplars"  # uns: crops of typical regions per phenotype
CROSSFIT_FOLD = "crossfit_fold"  # obs column: the fold whose phenotypes scored a patient
