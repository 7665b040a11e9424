"""``wsi-cosynth synthesize``: co-synthesise a whole tissue region and write it as a synthetic slide.

One joint sampling over the region (not independent tiles): the model's windows are fused at
every step, with a window grid that moves at random from step to step, so nuclei and tissue
continue across window borders and no tile grid shows. The nuclei come from the slide's
annotations (``--annotations`` or a sidecar), or, on a slide without annotations (or with ``--layouts
resample``), from the bundled layout model drawn over the region's tissue; instances are separated over the whole region with
the point-guided watershed. Writes into ``--out``:

  <stem>.synthetic.tif          tiled pyramidal TIFF at the model's mpp (OpenSlide, QuPath open it)
  <stem>.synthetic.geojson      QuPath detections: one Polygon per nucleus with its class
  <stem>.synthetic-labels.tif   semantic label (channel 0) and instance ids (channel 1), a pyramid

The region is ``--region X Y W H`` in level-0 pixels of the slide, default the bounding box of the
slide's tissue. Large regions are sampled in chunks (``--chunk``) that continue each other; memory
is one chunk's, the region's maps stay on disk; a killed run resumes when rerun with the same
options. ``wsi-cosynth export --slide DIR/x.synthetic.tif --annotations DIR/x.synthetic.geojson
--source real`` then makes a dataset of it at any tiling.
"""

from __future__ import annotations

import argparse

from ._output import add_output_arguments, say, show_progress, warn


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("synthesize", help="co-synthesise a tissue region as a synthetic slide + nuclei",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slide", required=True, help="the source slide (any format export reads)")
    parser.add_argument("--annotations", default=None,
                        help="nuclei annotations (default: a sidecar file with the slide's name)")
    parser.add_argument("--region", type=int, nargs=4, default=None, metavar=("X", "Y", "W", "H"),
                        help="the region in level-0 pixels (default: the bounding box of the slide's tissue)")
    parser.add_argument("--tissue", default=None, help="tissue word of the prompt (e.g. colon; default: unknown)")
    parser.add_argument("--slide-mpp", type=float, default=None,
                        help="the slide's microns per pixel, when the file does not record it")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--layouts", choices=("auto", "annotations", "resample"), default="auto",
                        help="nuclei from the slide's annotations, or resampled from a layout model over the region's "
                             "tissue (auto: annotations when the slide has some)")
    parser.add_argument("--layout-model", default=None, help="layout model JSON for --layouts resample (default: bundled)")
    parser.add_argument("--class-map", default=None, help="YAML {annotation class: model class} overrides")
    parser.add_argument("--default-class", default=None, metavar="NAME",
                        help="class of nuclei annotated without one (default: the model's 'other')")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    g = parser.add_argument_group("sampling")
    g.add_argument("--model", default=None, help="checkpoint directory (default: the bundled model)")
    g.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    g.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (default: the model's)")
    g.add_argument("--sampler", choices=("ddpm", "ddim", "dpmpp_2m", "dpmpp_2m_sde"), default=None,
                   help="sampler (default: the model's)")
    g.add_argument("--spacing", choices=("linspace", "trailing"), default=None, help="step spacing (default: the model's)")
    g.add_argument("--windows", choices=("wrap", "shift", "overlap"), default="wrap",
                   help="window grid moving at random each step, wrapping around the region's edges (wrap, "
                        "default: the windows of independent tiles), pushed inside at the edges (shift), or "
                        "fixed and overlapping (overlap)")
    g.add_argument("--overlap", type=int, default=None,
                   help="px of overlap between windows (default: 0 with wrap and shift, 1/8 tile with overlap)")
    g.add_argument("--chunk", type=int, default=None,
                   help="side in px of the pieces a large region is sampled in (default: 8 tiles less the "
                        "half-tile margin each chunk shares with those before it, 1920 px)")
    g.add_argument("--batch-size", type=int, default=8, help="windows per network batch (default 8)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    g.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    g.add_argument("--restart", action="store_true", help="discard an interrupted run's finished chunks")
    add_output_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..api import synthesize_region
    from ..taxonomy import load_class_map

    result = synthesize_region(
        args.slide, args.out, annotations=args.annotations, region=tuple(args.region) if args.region else None,
        tissue=args.tissue, slide_mpp=args.slide_mpp, model=args.model,
        class_map=load_class_map(args.class_map) if args.class_map else None, default_class=args.default_class,
        layouts=args.layouts, layout_model=args.layout_model,
        steps=args.steps, guidance=args.guidance, sampler=args.sampler, spacing=args.spacing, windows=args.windows,
        overlap=args.overlap, chunk=args.chunk, batch_size=args.batch_size, seed=args.seed, device=args.device,
        threads=args.threads, overwrite=args.overwrite, restart=args.restart, progress=show_progress(args),
    )
    for note in result.notes:
        warn(note)
    h, w = result.size_hw
    say(args, f"wrote {result.slide} ({w}x{h} px at {result.mpp:g} um/px, {result.n_nuclei} nuclei of "
              f"{result.n_points} points), {result.geojson.name}, {result.labels.name} in {result.seconds:.0f} s")
    return 0
