"""Write an evaluation report directory: report.json, report.md and PNG figures.

Layout of ``REPORT_DIR``::

    report.json              every figure (see :func:`~wsi_cosynth.evaluation.runner.compare_sets`)
                             plus inputs, feature extractor and versions
    report.md                the same, readable
    class_composition.png    nucleus share per class and pixel share per class, real vs synthetic
    nn_distance_hist.png     nearest-neighbour distance between nuclei (px), real vs synthetic
    samples.png              first tiles of each set with instance outlines in class colours

The directory is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..errors import CosynthError
from .plots import bar_chart, histogram_chart, sample_grid
from .runner import SetSummary

REPORT_FILES = ("report.json", "report.md", "class_composition.png", "nn_distance_hist.png", "samples.png")


def _jsonable(x: object) -> object:
    """Replace NaN/inf by None and numpy scalars by Python numbers, recursively."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _fmt(x: object, digits: int = 4) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


def render_markdown(report: dict) -> str:
    """report.md text for a report dict (as written to report.json)."""
    f = report["figures"]
    img, lab, agr, lay = f["image"], f["labels"], f["agreement"], f["layout"]
    inp = report["inputs"]
    is_syn = img["inception_score"]["synthetic"]
    is_real = img["inception_score"]["real"]
    lines = [
        "# wsi-cosynth evaluation report",
        "",
        f"- real: `{inp['real']['path']}` ({inp['real']['format']}), {f['n_tiles']['real']} tiles",
        f"- synthetic: `{inp['synthetic']['path']}` ({inp['synthetic']['format']}), {f['n_tiles']['synthetic']} tiles",
        f"- classes (joined by name into the real set's): {', '.join(f['taxonomy']['names'])}",
        f"- features: {report['feature_extractor']['weights']} ({img['feature_dim']}-d pool features, "
        "input 299 x 299 in [-1, 1])",
        "",
        "## Summary",
        "",
        "| metric | value | better |",
        "|---|---|---|",
        f"| FID | {_fmt(img['fid'])} | lower |",
        f"| KID (x1000) | {_fmt(img['kid']['mean'] * 1e3)} +/- {_fmt(img['kid']['std'] * 1e3)} | lower |",
        f"| IS synthetic (real) | {_fmt(is_syn['mean'] if is_syn else None)} ({_fmt(is_real['mean'] if is_real else None)}) | higher |",
        f"| FSD (percent scale) | {_fmt(lab['fsd'])} | lower |",
        f"| label-image agreement AUC, synthetic (real) | {_fmt(agr['synthetic']['mean_auc'], 3)} "
        f"({_fmt(agr['real']['mean_auc'], 3)}) | higher; 0.5 = labels unrelated to the image |",
        f"| layout distance | {_fmt(lay['distance']['total'], 3)} | lower |",
        "",
        "FSD: Frechet distance between per-tile class pixel proportions in percent (background included), as "
        "Semantic Palette and the CoSyn paper report it; on the [0, 1] scale it is "
        f"{_fmt(lab['fsd_unit_scale'])}.",
        "Agreement: per tile, the probability that a labelled-nucleus pixel has a higher hematoxylin optical "
        f"density than a background pixel; tiles with AUC >= {agr['real']['auc_threshold']:g}: "
        f"synthetic {_fmt(agr['synthetic']['fraction_agreeing'], 3)}, real {_fmt(agr['real']['fraction_agreeing'], 3)}.",
        "",
        "## Class composition",
        "",
        "| class | nuclei real | nuclei synthetic | pixel % real | pixel % synthetic |",
        "|---|---|---|---|---|",
    ]
    cr, cs = lab["composition"]["real"], lab["composition"]["synthetic"]
    for name in f["taxonomy"]["names"]:
        a, b = cr["classes"][name], cs["classes"][name]
        lines.append(
            f"| {name} | {a['nuclei']} ({_fmt(a['nucleus_fraction'], 3)}) | {b['nuclei']} ({_fmt(b['nucleus_fraction'], 3)}) "
            f"| {_fmt(a['pixel_percent'], 3)} | {_fmt(b['pixel_percent'], 3)} |"
        )
    lines += [
        f"| nuclei per tile | {_fmt(cr['nuclei_per_tile'], 4)} | {_fmt(cs['nuclei_per_tile'], 4)} | | |",
        "",
        "![class composition](class_composition.png)",
        "",
        "## Layout",
        "",
        "| statistic | real | synthetic |",
        "|---|---|---|",
    ]
    for key in ("density_per_1e4_px2_mean", "nn_distance_px_mean", "nn_distance_px_median"):
        lines.append(f"| {key} | {_fmt(lay['real'][key])} | {_fmt(lay['synthetic'][key])} |")
    lines += ["", "Layout distance by group (normalised 1-D Wasserstein; 0 = same distribution):", ""]
    lines += [f"- {g}: {_fmt(v, 3)}" for g, v in lay["distance"]["groups"].items()]
    lines += ["", "![nearest-neighbour distances](nn_distance_hist.png)", "", "## Samples", "", "![samples](samples.png)", ""]
    if f["warnings"]:
        lines += ["## Warnings", ""] + [f"- {w}" for w in f["warnings"]] + [""]
    return "\n".join(lines)


def write_report(
    out_dir: str | Path,
    figures: dict,
    real: SetSummary,
    synthetic: SetSummary,
    *,
    inputs: dict,
    feature_extractor: dict,
) -> Path:
    """Write report.json, report.md and the PNG figures into ``out_dir`` (atomically, as a directory).

    Parameters
    ----------
    out_dir : the report directory; an existing one is replaced once the new one is complete
    figures : output of :func:`~wsi_cosynth.evaluation.runner.compare_sets`
    real, synthetic : the summaries the figures came from (for the plots)
    inputs : ``{"real": {"path", "format"}, "synthetic": {...}}``
    feature_extractor : ``{"weights": path, ...}`` recorded in the report
    """
    from .. import __version__
    from ..layouts.stats import nn_distances

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise CosynthError(f"--out {out} exists and is not a directory")
    report = _jsonable(
        {"wsi_cosynth_version": __version__, "inputs": inputs, "feature_extractor": feature_extractor, "figures": figures}
    )
    names = list(real.taxonomy.names)
    comp = report["figures"]["labels"]["composition"]
    nn = {
        s.name: np.concatenate([nn_distances(lay.xy_tile) for lay in s.layouts] or [np.zeros(0)])
        for s in (real, synthetic)
    }
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        (tmp / "report.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        (tmp / "report.md").write_text(render_markdown(report), encoding="utf-8")
        bars = bar_chart(
            names,
            {s: [comp[s]["classes"][n]["nucleus_fraction"] * 100 for n in names] for s in ("real", "synthetic")},
            title="Class composition: share of nuclei per class",
            ylabel="% of nuclei",
        )
        bars.save(tmp / "class_composition.png")
        histogram_chart(
            nn, title="Nearest-neighbour distance between nuclei", xlabel="distance (px)"
        ).save(tmp / "nn_distance_hist.png")
        sample_grid({"real": real.grid, "synthetic": synthetic.grid}, real.taxonomy).save(tmp / "samples.png")
    return out
