"""`pixal3d eval`: score a pipeline on held-out assets (JSON + Markdown report)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pixal3d.cli.common import add_model_options, load_pipeline
from pixal3d.errors import InputError


# ------------------------------------------------------------------------------------------------------ eval
def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="score the pipeline on held-out assets: geometry, silhouettes, renders, FoV; JSON + Markdown report",
        description="For each held-out asset (mesh files in a folder, or a procedural seed range), render VIEWS "
        "condition views with known random cameras (FoV 20-60 degrees), run the pipeline with the true FoV and/or "
        "its own estimate, and compare with the ground truth in the view-aligned volume frame. Writes "
        "REPORT_DIR/metrics.json, REPORT_DIR/report.md and REPORT_DIR/images/. Metrics: docs/evaluation.md.",
    )
    data = p.add_mutually_exclusive_group(required=True)
    data.add_argument("--data", type=Path, default=None, help="folder of held-out .glb/.gltf/.obj files")
    data.add_argument("--procedural", default=None, metavar="START:END",
                      help="procedural objects of seeds START..END-1 (pixal3d data procedural)")
    data.add_argument("--merge", type=Path, nargs="+", default=None, metavar="REPORT_DIR",
                      help="instead of evaluating: merge these report folders (same model and options, e.g. seed "
                      "ranges run as separate jobs) into -o")
    p.add_argument("--views", type=int, default=4, help="condition views per asset (default 4)")
    p.add_argument("-o", "--output", type=Path, required=True, help="report folder (created)")
    add_model_options(p, ["micro", "micro64", "tiny"])
    p.add_argument("--oracle", nargs="+", default=None, metavar="VARIANT",
                   help="score these variants instead of the full cascade alone: gt, vae-structure, vae-shape, "
                   "vae-texture, gt-structure, gt-shape, full, or 'all' (the ceilings; oracle variants use the true "
                   "FoV and need a model whose R_hr the voxeliser makes: not --random-weights micro, use micro64); "
                   "also writes REPORT_DIR/ceilings.md and ceilings.json")
    p.add_argument("--fov-mode", choices=["true", "estimated", "both"], default="both",
                   help="run the pipeline with the true FoV, its estimated FoV, or both (default both)")
    p.add_argument("--samples", type=int, default=100_000, help="surface samples per mesh (default 100000)")
    p.add_argument("--image-size", type=int, default=256,
                   help="side of the condition image and of the metric renders, pixels (default 256)")
    p.add_argument("--seed", type=int, default=0, help="seed of the views and of the sampling noise (default 0)")
    p.add_argument("--no-silhouette", action="store_true", help="run the pipeline without the silhouette rule")
    p.add_argument("--no-image-texels", action="store_true", help="run the pipeline without the image texels")
    p.add_argument("--depth-source", choices=["head", "render"], default="head",
                   help="the depth map the pipeline uses: the depth head's (default) or the ground truth's rendered "
                        "depth, to measure what the head's error costs")
    p.set_defaults(func=_run_eval)


def _procedural_range(text: str) -> tuple[int, int]:
    try:
        start, end = (int(x) for x in text.split(":"))
    except ValueError:
        raise InputError(f"--procedural must be START:END (integers), got {text!r}") from None
    return start, end


def _run_eval(args: argparse.Namespace) -> int:
    from pixal3d.eval.report import evaluate, merge_reports
    from pixal3d.eval.runner import EvalOptions, folder_assets, procedural_assets

    if args.merge is not None:
        data = merge_reports(args.merge, args.output)
        _print_aggregate(data)
        print(f"wrote {args.output / 'metrics.json'} and {args.output / 'report.md'}")
        if set(data["options"].get("variants", ["full"])) != {"full"}:
            _write_ceilings(args.output, f"merged {len(data['assets'])} assets", data)
        return 0

    if args.views < 1 or args.samples < 1 or args.image_size < 16:
        raise InputError(f"need --views >= 1, --samples >= 1, --image-size >= 16; got {args.views}, "
                         f"{args.samples}, {args.image_size}")
    modes = ("true", "estimated") if args.fov_mode == "both" else (args.fov_mode,)
    options = EvalOptions(views=args.views, samples=args.samples, image_size=args.image_size, fov_modes=modes,
                          seed=args.seed, silhouette=not args.no_silhouette,
                          image_texels=not args.no_image_texels, depth_source=args.depth_source,
                          variants=oracle_variants(args.oracle))
    assets = folder_assets(args.data) if args.data is not None else procedural_assets(*_procedural_range(args.procedural))
    pipe = load_pipeline(args)
    model = f"random {args.random_weights}" if args.random_weights else (args.model or "default")
    data = evaluate(pipe, assets, args.output, options, {"model": model, "command": " ".join(sys.argv)})
    _print_aggregate(data)
    print(f"wrote {args.output / 'metrics.json'} and {args.output / 'report.md'}")
    if args.oracle is not None:
        _write_ceilings(args.output, _set_name(args), data)
    return 0


def _write_ceilings(output: Path, name: str, data: dict) -> None:
    from pixal3d.eval.ceilings import write_ceilings

    md, js = write_ceilings(output, {name: data})
    print(f"wrote {md} and {js}")


def oracle_variants(names: list[str] | None) -> tuple[str, ...]:
    """`--oracle` -> `EvalOptions.variants`: None = the full cascade only, "all" = every variant."""
    from pixal3d.eval.oracles import VARIANTS

    if names is None:
        return ("full",)
    if "all" in names:
        return VARIANTS
    return tuple(names)


def _set_name(args: argparse.Namespace) -> str:
    if args.data is not None:
        return f"folder {args.data}"
    return f"procedural seeds {args.procedural}"


def _print_aggregate(data: dict) -> None:
    """One line per run key (FoV mode), rounded as docs/results.md rounds (F-score 3 decimals, Chamfer-L1 4),
    then the other headline figures the run has: means, and medians for the mesh topology."""

    def rounded(value: float | None, digits: int) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    extras = (("volume_iou_64", "mean", "volume IoU", 3), ("silhouette_iou", "mean", "silhouette IoU", 3),
              ("input_psnr", "mean", "input PSNR", 2), ("base_color_psnr", "mean", "base-colour PSNR", 2),
              ("depth_delta1", "mean", "depth delta<1.25", 3), ("components", "median", "median components", 1),
              ("boundary_edge_ratio", "median", "median boundary-edge ratio", 4))
    for mode, stats in data["aggregate"].items():
        f05, cd = stats.get("fscore@0.05", {}).get("mean"), stats.get("chamfer_l1", {}).get("mean")
        label = f"{mode} FoV" if mode in ("true", "estimated") else mode  # oracle runs: the variant's name
        line = (f"{label}: {stats['runs']} runs, {stats['failures']} failed; mean F-score@0.05 {rounded(f05, 3)}, "
                f"Chamfer-L1 {rounded(cd, 4)}")
        more = [f"{label} {rounded(stats[key].get(which), digits)}" for key, which, label, digits in extras
                if key in stats]
        print(line + ("; " + ", ".join(more) if more else ""))


