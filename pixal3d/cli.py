"""The `pixal3d` command line: argparse subcommands that parse, call the library, and report.

No logic lives here: each subcommand is a pair `_add_<name>(subparsers)` (its options) and `_run_<name>(args)`
(one call into the library). A new subcommand adds its pair and one entry to `COMMANDS`. Heavy modules are
imported inside the `_run_` functions so that `pixal3d --help` stays instant.

Exit codes: 0 success, 1 unexpected failure, 2 a user mistake (`InputError`, bad options).
Angles are degrees on the command line and radians in the library; the conversion happens here, once.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pixal3d import __version__
from pixal3d.errors import InputError

logger = logging.getLogger("pixal3d")


# --------------------------------------------------------------------------------------------- preprocess
def _add_preprocess(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "preprocess",
        help="crop an image to the square, object-centred RGBA input the models see",
        description="EXIF transpose, alpha (given, or background removal), square crop of 1.1x the object's "
        "bounding box, composite on black, resize to SIZE. Writes an RGBA PNG.",
    )
    p.add_argument("image", type=Path, help="input image (any format Pillow reads)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output PNG path")
    p.add_argument("--size", type=int, default=512, help="output side S in pixels (default 512)")
    p.add_argument(
        "--background",
        choices=["auto", "grabcut", "none"],
        default="auto",
        help="background removal for opaque images: auto (GrabCut when the image has no real alpha), "
        "grabcut (always, ignoring any alpha), none (keep the whole image as the object)",
    )
    p.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        help="refuse images with more pixels than this (decompression-bomb guard; default 64 Mpx)",
    )
    p.set_defaults(func=_run_preprocess)


def _run_preprocess(args: argparse.Namespace) -> int:
    from pixal3d.preprocess import DEFAULT_MAX_PIXELS, preprocess_image, save_png

    result = preprocess_image(
        args.image,
        size=args.size,
        background=args.background,
        max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS,
    )
    save_png(result.image, args.output)
    print(f"wrote {args.output} ({args.size}x{args.size} RGBA; object bbox {result.bbox} in the source image)")
    return 0


# --------------------------------------------------------------------------------------------- convert
def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="mesh (GLB/GLTF/OBJ) or saved voxels -> sparse PBR voxels -> textured GLB",
        description="Normalise a mesh into the volume cube, voxelise it at RESOLUTION, rebuild the surface, clean "
        "and simplify it to FACES, bake base-colour, metallic-roughness and normal textures, and write a GLB. "
        "A .safetensors voxel file (from --save-voxels) skips the voxelisation.",
    )
    p.add_argument("input", type=Path, help="input .glb/.gltf/.obj (with .mtl, textures) or .safetensors voxels")
    p.add_argument("-o", "--output", type=Path, required=True, help="output .glb path")
    p.add_argument("--resolution", type=int, default=256, help="voxel resolution R: 64/128/256/512 (default 256)")
    p.add_argument("--faces", type=int, default=100_000, help="face budget of the output mesh (default 100000)")
    p.add_argument("--texture-size", type=int, default=2048, help="texture side, 256..8192 pixels (default 2048)")
    p.add_argument(
        "--format",
        choices=["png", "webp"],
        default="png",
        help="texture image format (default png; webp needs the EXT_texture_webp glTF extension)",
    )
    p.add_argument("--save-voxels", type=Path, default=None, help="also save the voxel set (.safetensors)")
    p.set_defaults(func=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    from pixal3d.geometry.export import convert_file

    convert_file(
        args.input,
        args.output,
        resolution=args.resolution,
        faces=args.faces,
        texture_size=args.texture_size,
        image_format=args.format,
        save_voxels_path=args.save_voxels,
    )
    print(f"wrote {args.output}")
    return 0


# --------------------------------------------------------------------------------------------- data
def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data",
        help="training data: procedural objects, view-aligned samples, mesh ingestion",
        description="The data engine (DESIGN section 7). Each sub-command is an _add_data_<name> / "
        "_run_data_<name> pair registered in DATA_COMMANDS.",
    )
    data_sub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    for add in DATA_COMMANDS:
        add(data_sub)


def _add_data_procedural(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "procedural",
        help="export one seeded procedural PBR object as a GLB",
        description="Build the procedural object of SEED (family = FAMILIES[seed % count] unless --family) "
        "inside the unit cube, y up, and write it as a binary glTF with PBR materials.",
    )
    p.add_argument("--seed", type=int, required=True, help="integer >= 0")
    p.add_argument("-o", "--output", type=Path, required=True, help="output .glb path (written atomically)")
    p.add_argument("--family", default=None, help="force a family (e.g. chair, mug, car); default: the seed's")
    p.set_defaults(func=_run_data_procedural)


def _run_data_procedural(args: argparse.Namespace) -> int:
    from pixal3d.data.procedural import export_glb, generate

    obj = generate(args.seed, family=args.family)
    export_glb(obj, args.output)
    print(f"wrote {args.output} ({obj.family}, seed {obj.seed}, {len(obj.scene.geometry)} parts)")
    return 0


def _add_data_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="render + align + voxelise procedural objects into sample shards",
        description="Make K view-aligned training samples of each of N procedural objects (seeds O..O+N-1) and "
        "write them as safetensors shards with a JSON index to DIR. Resumable: rerun the same command to finish "
        "an interrupted run.",
    )
    p.add_argument("--procedural", type=int, required=True, metavar="N", help="number of procedural objects")
    p.add_argument("--views", type=int, default=4, metavar="K", help="views per object (default 4)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="DIR", help="data folder")
    _add_sample_options(p)
    p.add_argument("--seed-offset", type=int, default=0, metavar="O", help="first procedural seed (default 0)")
    p.set_defaults(func=_run_data_generate)


def _add_sample_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resolution", type=int, default=256, help="fine voxel resolution R_hr (default 256)")
    p.add_argument("--coarse", type=int, default=64, help="coarse occupancy resolution (default 64)")
    p.add_argument("--size", type=int, default=512, help="image side S in pixels (default 512)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--rank", type=int, default=0, help="this process's rank (default 0)")
    p.add_argument("--world-size", type=int, default=1, help="number of ranks splitting the work (default 1)")
    p.add_argument("--device", default="cpu", help="render/voxelise device, e.g. cuda (default cpu)")


def _sample_options(args: argparse.Namespace) -> object:
    from pixal3d.data.shards import SampleOptions

    return SampleOptions(image_size=args.size, resolution=args.resolution, coarse=args.coarse)


def _print_summary(summary: object, output: Path) -> int:
    for item in summary.skipped:
        print(f"skipped {item['id']}: {item['reason']}")
    for item in summary.failed:
        print(f"failed {item['id']}: {item['reason']}")
    print(f"{output}: {summary.line()}")
    return 1 if summary.failed else 0


def _run_data_generate(args: argparse.Namespace) -> int:
    from pixal3d.data.shards import procedural_units, write_shards

    units = procedural_units(args.procedural, args.views, args.seed_offset)
    summary = write_shards(units, args.output, _sample_options(args), workers=args.workers, rank=args.rank,
                           world_size=args.world_size, device=args.device)
    return _print_summary(summary, args.output)


def _add_data_ingest(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ingest",
        help="render + align + voxelise a folder of GLB/GLTF/OBJ meshes into sample shards",
        description="Every .glb/.gltf/.obj under MESH_DIR is normalised into the unit cube and turned into K "
        "samples, written like `data generate`. Bad files are skipped with their reason; resumable.",
    )
    p.add_argument("mesh_dir", type=Path, metavar="MESH_DIR", help="folder of meshes (searched recursively)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="DIR", help="data folder")
    p.add_argument("--views", type=int, default=4, metavar="K", help="views per mesh (default 4)")
    _add_sample_options(p)
    p.set_defaults(func=_run_data_ingest)


def _run_data_ingest(args: argparse.Namespace) -> int:
    from pixal3d.data.ingest import ingest_folder

    summary = ingest_folder(args.mesh_dir, args.output, args.views, _sample_options(args), workers=args.workers,
                            rank=args.rank, world_size=args.world_size, device=args.device)
    return _print_summary(summary, args.output)


def _add_data_show(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "show",
        help="a PNG of one stored sample: the input image beside its voxels from three directions",
        description="Read sample I of the data folder DIR and write its image beside orthographic views of its "
        "voxels' base colour from the front (+z), right (+x) and top (+y).",
    )
    p.add_argument("data_dir", type=Path, metavar="DIR", help="data folder written by data generate/ingest")
    p.add_argument("--index", type=int, default=0, metavar="I", help="sample index (default 0)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output .png path")
    p.set_defaults(func=_run_data_show)


def _run_data_show(args: argparse.Namespace) -> int:
    from pixal3d.data.dataset import ShardDataset
    from pixal3d.data.samples import sample_sheet
    from pixal3d.preprocess import save_png

    dataset = ShardDataset(args.data_dir)
    if not 0 <= args.index < len(dataset):
        raise InputError(f"--index {args.index} is out of range: {args.data_dir} holds {len(dataset)} samples")
    sample = dataset[args.index]
    save_png(sample_sheet(sample), args.output)
    print(f"wrote {args.output} ({sample.sample_id}, fov {math.degrees(sample.fov):.1f} deg, "
          f"{len(sample.voxels)} voxels at R={sample.voxels.resolution})")
    return 0


DATA_COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_data_procedural,
    _add_data_generate,
    _add_data_ingest,
    _add_data_show,
)


# -------------------------------------------------------------------------------------------------- train
def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train one model (a VAE or a flow stage) from a JSON config",
        description="Train the model named in CONFIG (see configs/). One process: pixal3d train CONFIG. "
        "Several: torchrun --nproc_per_node=N -m pixal3d train CONFIG (DDP; NCCL on GPUs, gloo on CPU).",
    )
    p.add_argument("config", type=Path, help="training config (JSON, keys of pixal3d.training.config.TrainConfig)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in out_dir")
    p.add_argument("--out-dir", type=Path, default=None, help="override the config's out_dir")
    p.add_argument("--stop-at", type=int, default=None, help="stop after this many steps (train in chunks)")
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from pixal3d.config import load_config
    from pixal3d.training.config import TrainConfig
    from pixal3d.training.loop import train

    config = load_config(TrainConfig, args.config)
    if args.out_dir is not None:
        config = replace(config, out_dir=str(args.out_dir))
    result = train(config, resume=args.resume, stop_at=args.stop_at)
    if result.checkpoint is not None:
        print(f"trained {config.model} to step {result.step}; checkpoint {result.checkpoint}")
    return 0


# -------------------------------------------------------------------------------------------------- generate
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="image(s) -> textured GLB: preprocess, FoV, three flow stages, decode, bake",
        description="Generate one textured, PBR GLB per input image (files, several files, or folders of images). "
        "Each GLB is written atomically; the run prints where every file went and the time of each step. "
        "No trained weights ship yet: until they do, run with --random-weights micro (seconds on a CPU) or tiny "
        "(the default model's size) to try the whole pipeline with randomly initialised weights; the shapes it "
        "makes are then noise.",
    )
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files, or folders of images")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="output .glb for one image, else a folder (created) receiving NAME.glb per image")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--model", default=None,
                        help="'default' (the shipped weights), a folder from save_pretrained, or a hub name "
                        "(with --allow-download); default: 'default'")
    source.add_argument("--random-weights", choices=["micro", "tiny"], default=None,
                        help="use randomly initialised weights of this size instead of trained ones (how the tool "
                        "runs before trained weights ship; the result is noise-shaped)")
    p.add_argument("--allow-download", action="store_true", help="allow --model to name a Hugging Face hub repo")
    p.add_argument("--fov", type=float, default=None,
                   help="horizontal field of view of the input image in DEGREES (default: estimated by the model)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling noise (default 0)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps per stage (default: the model's)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance weight (default: the model's)")
    p.add_argument("--resolution", type=int, default=None,
                   help="fine voxel resolution; each checkpoint decodes at one (default: the model's)")
    p.add_argument("--faces", type=int, default=100_000, help="face budget of the output mesh (default 100000)")
    p.add_argument("--texture-size", type=int, default=2048, help="texture side, 256..8192 pixels (default 2048)")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N (default auto)")
    p.add_argument("--low-vram", action="store_true", help="keep only the running step's weights on the GPU")
    p.add_argument("--preview", action="store_true",
                   help="also write NAME_preview.png: the input beside 4 renders of the result")
    p.set_defaults(func=_run_generate)


def _generate_inputs(paths: Sequence[Path]) -> list[Path]:
    """Image files from files and folders (a folder's images in name order)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            raise InputError(f"{path}: no such image file or folder")
    if not found:
        raise InputError(f"no images found in {[str(p) for p in paths]} (suffixes {IMAGE_SUFFIXES})")
    return found


def _generate_outputs(inputs: Sequence[Path], output: Path) -> list[Path]:
    """One output .glb per input: `output` itself for a single input ending in .glb, else `output/NAME.glb`."""
    if len(inputs) == 1 and output.suffix.lower() == ".glb":
        if not output.parent.is_dir():
            raise InputError(f"output folder {output.parent} does not exist; create it first")
        return [output]
    if output.suffix.lower() == ".glb" or (output.exists() and not output.is_dir()):
        raise InputError(f"-o {output}: with {len(inputs)} images the output must be a folder")
    stems = [p.stem for p in inputs]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise InputError(f"several inputs would write the same output name(s) {duplicates}; rename them")
    output.mkdir(parents=True, exist_ok=True)
    return [output / f"{stem}.glb" for stem in stems]


def _generate_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {name}: CUDA is not available here; use --device cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise InputError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")
    return name


def _run_generate(args: argparse.Namespace) -> int:
    import math
    import time

    from pixal3d.asset import contact_sheet
    from pixal3d.pipeline import Pixal3DPipeline
    from pixal3d.preprocess import save_png
    from pixal3d.stages import EmptyStructureError

    if args.fov is not None and not 0 < args.fov < 180:
        raise InputError(f"--fov is in degrees and must be in (0, 180), got {args.fov}")
    inputs = _generate_inputs(args.images)
    outputs = _generate_outputs(inputs, args.output)
    device = _generate_device(args.device)
    if args.random_weights is not None:
        logger.warning("using RANDOM %s weights: the result shows the data flow, not a real shape", args.random_weights)
        pipe = Pixal3DPipeline.from_config(args.random_weights)
    else:
        pipe = Pixal3DPipeline.from_pretrained(args.model or "default", allow_download=args.allow_download)
    pipe.to(device)
    fov = None if args.fov is None else math.radians(args.fov)
    for image, glb in zip(inputs, outputs, strict=True):
        logger.info("generating %s -> %s", image, glb)
        try:
            asset = pipe(image, fov=fov, seed=args.seed, steps=args.steps, guidance=args.guidance,
                         resolution=args.resolution, faces=args.faces, texture_size=args.texture_size,
                         low_vram=args.low_vram)
        except EmptyStructureError as err:
            print(f"pixal3d generate: {image}: {err}", file=sys.stderr)
            return 1
        start = time.perf_counter()
        asset.export(glb)
        timings = {**asset.timings, "export": time.perf_counter() - start}
        print(f"wrote {glb} (from {image}; fov {math.degrees(asset.camera.fov):.1f} deg, {asset.fov_source})")
        if args.preview:
            preview = glb.with_name(f"{glb.stem}_preview.png")
            save_png(contact_sheet(glb, asset.image), preview)
            print(f"wrote {preview}")
        print("  time: " + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items())
              + f"; total {sum(timings.values()):.2f} s")
    return 0


# ------------------------------------------------------------------------------------------------------ eval
def _add_model_options(p: argparse.ArgumentParser, presets: Sequence[str]) -> None:
    source = p.add_mutually_exclusive_group()
    source.add_argument("--model", default=None,
                        help="'default' (the shipped weights), a folder from save_pretrained, or a hub name "
                        "(with --allow-download); default: 'default'")
    source.add_argument("--random-weights", choices=list(presets), default=None,
                        help="randomly initialised weights of this size instead of trained ones (scores are noise)")
    p.add_argument("--allow-download", action="store_true", help="allow --model to name a Hugging Face hub repo")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N (default auto)")


def _load_pipeline(args: argparse.Namespace):  # -> Pixal3DPipeline (imported lazily)
    from pixal3d.pipeline import Pixal3DPipeline

    device = _generate_device(args.device)
    if args.random_weights is not None:
        logger.warning("using RANDOM %s weights: the figures measure the data flow, not a model", args.random_weights)
        pipe = Pixal3DPipeline.from_config(args.random_weights)
    else:
        pipe = Pixal3DPipeline.from_pretrained(args.model or "default", allow_download=args.allow_download)
    return pipe.to(device)


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
    p.add_argument("--views", type=int, default=4, help="condition views per asset (default 4)")
    p.add_argument("-o", "--output", type=Path, required=True, help="report folder (created)")
    _add_model_options(p, ["micro", "tiny"])
    p.add_argument("--fov-mode", choices=["true", "estimated", "both"], default="both",
                   help="run the pipeline with the true FoV, its estimated FoV, or both (default both)")
    p.add_argument("--samples", type=int, default=100_000, help="surface samples per mesh (default 100000)")
    p.add_argument("--image-size", type=int, default=256,
                   help="side of the condition image and of the metric renders, pixels (default 256)")
    p.add_argument("--seed", type=int, default=0, help="seed of the views and of the sampling noise (default 0)")
    p.set_defaults(func=_run_eval)


def _procedural_range(text: str) -> tuple[int, int]:
    try:
        start, end = (int(x) for x in text.split(":"))
    except ValueError:
        raise InputError(f"--procedural must be START:END (integers), got {text!r}") from None
    return start, end


def _run_eval(args: argparse.Namespace) -> int:
    from pixal3d.eval.report import evaluate
    from pixal3d.eval.runner import EvalOptions, folder_assets, procedural_assets

    if args.views < 1 or args.samples < 1 or args.image_size < 16:
        raise InputError(f"need --views >= 1, --samples >= 1, --image-size >= 16; got {args.views}, "
                         f"{args.samples}, {args.image_size}")
    modes = ("true", "estimated") if args.fov_mode == "both" else (args.fov_mode,)
    options = EvalOptions(views=args.views, samples=args.samples, image_size=args.image_size, fov_modes=modes,
                          seed=args.seed)
    assets = folder_assets(args.data) if args.data is not None else procedural_assets(*_procedural_range(args.procedural))
    pipe = _load_pipeline(args)
    model = f"random {args.random_weights}" if args.random_weights else (args.model or "default")
    data = evaluate(pipe, assets, args.output, options, {"model": model, "command": " ".join(sys.argv)})
    for mode, stats in data["aggregate"].items():
        f05, cd = stats.get("fscore@0.05", {}).get("mean"), stats.get("chamfer_l1", {}).get("mean")
        print(f"{mode} FoV: {stats['runs']} runs, {stats['failures']} failed; mean F-score@0.05 {f05}, "
              f"Chamfer-L1 {cd}")
    print(f"wrote {args.output / 'metrics.json'} and {args.output / 'report.md'}")
    return 0


# ----------------------------------------------------------------------------------------------------- bench
def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="time and peak memory of each inference stage (warm-up, then the median of several runs)",
        description="Run the pipeline on a fixed procedural input: one warm-up, then RUNS timed runs; print a "
        "table of per-stage median times (preprocess, encode, fov, structure, shape, texture, decode, export) and "
        "peak memory, and write them as JSON.",
    )
    _add_model_options(p, ["micro", "tiny"])
    p.add_argument("--resolution", type=int, default=None,
                   help="fine voxel resolution; each checkpoint decodes at one (default: the model's)")
    p.add_argument("--runs", type=int, default=5, help="timed runs (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    p.add_argument("--export", action="store_true", help="also time the GLB export (bake)")
    p.add_argument("--faces", type=int, default=100_000, help="export face budget (default 100000)")
    p.add_argument("--texture-size", type=int, default=2048, help="export texture side (default 2048)")
    p.add_argument("--fov", type=float, default=None,
                   help="input FoV in DEGREES (default: estimated, so the fov stage does its real work)")
    p.add_argument("-o", "--output", type=Path, default=Path("bench.json"), help="JSON file (default bench.json)")
    p.set_defaults(func=_run_bench)


def _run_bench(args: argparse.Namespace) -> int:
    import math

    from pixal3d.bench import bench_image, format_table, run_bench
    from pixal3d.config import write_json_atomic

    if args.fov is not None and not 0 < args.fov < 180:
        raise InputError(f"--fov is in degrees and must be in (0, 180), got {args.fov}")
    pipe = _load_pipeline(args)
    pipe.set_progress_bar_config(disable=True)
    result = run_bench(pipe, bench_image(pipe.settings.image_size), runs=args.runs, warmup=args.warmup,
                       export=args.export, fov=None if args.fov is None else math.radians(args.fov),
                       resolution=args.resolution, faces=args.faces, texture_size=args.texture_size)
    result["model"] = f"random {args.random_weights}" if args.random_weights else (args.model or "default")
    write_json_atomic(args.output, result)
    print(format_table(result))
    print(f"wrote {args.output}")
    return 0


# -------------------------------------------------------------------------------------------------- serve, demo
def _add_server_options(p: argparse.ArgumentParser, port: int) -> None:
    _add_model_options(p, ["micro", "tiny"])
    p.add_argument("--low-vram", action="store_true", help="keep only the running step's weights on the GPU")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=port, help=f"TCP port (default {port})")


def _pipeline_factory(args: argparse.Namespace) -> Callable[[], object]:
    from functools import partial

    from pixal3d.serve import build_pipeline

    return partial(build_pipeline, model=args.model, random_weights=args.random_weights,
                   allow_download=args.allow_download, device=_generate_device(args.device))


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="REST server: POST an image, poll the job, download the GLB (FastAPI + uvicorn)",
        description="Serve the pipeline over HTTP: POST /v1/generate (multipart image + JSON options, fov in "
        "degrees), GET /v1/jobs/ID, GET /v1/jobs/ID/result.glb, DELETE /v1/jobs/ID, GET /healthz; the OpenAPI "
        "document is at /openapi.json and /docs. One worker runs the jobs in order from a bounded queue. "
        "Needs: pip install 'pixal3d[serve]'.",
    )
    _add_server_options(p, port=8000)
    p.add_argument("--results-dir", type=Path, default=Path("pixal3d-results"),
                   help="folder of the result GLBs (created; default ./pixal3d-results)")
    p.add_argument("--queue-size", type=int, default=8, help="jobs that may wait; more get HTTP 429 (default 8)")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest upload in MiB; more: 413 (default 20)")
    p.add_argument("--max-pixels", type=int, default=16_000_000, help="largest image in pixels (default 16e6)")
    p.add_argument("--job-timeout", type=float, default=600.0, help="per-job time limit in seconds (default 600)")
    p.add_argument("--keep-results", type=int, default=100, help="keep this many most recent results (default 100)")
    p.add_argument("--max-age-hours", type=float, default=24.0, help="delete results older than this (default 24)")
    p.set_defaults(func=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    from pixal3d.serve.jobs import Retention
    from pixal3d.serve.rest import serve

    serve(_pipeline_factory(args), args.results_dir, host=args.host, port=args.port, queue_size=args.queue_size,
          max_upload_bytes=int(args.max_upload_mb * 2**20), max_pixels=args.max_pixels,
          job_timeout_s=args.job_timeout, low_vram=args.low_vram,
          retention=Retention(max_results=args.keep_results, max_age_s=args.max_age_hours * 3600))
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="web demo (Gradio): upload an image, watch the stages, turn the 3D result, download the GLB",
        description="A browser UI over the pipeline: the preprocessed crop, FoV auto or manual, seed, steps, "
        "guidance, resolution, face budget, texture size, progress per stage, an interactive 3D view of the GLB "
        "and its download. Needs: pip install 'pixal3d[demo]'.",
    )
    _add_server_options(p, port=7860)
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from pixal3d.serve.demo import run_demo

    run_demo(_pipeline_factory(args), host=args.host, port=args.port, low_vram=args.low_vram)
    return 0


COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_preprocess, _add_convert, _add_data, _add_train, _add_generate, _add_eval, _add_bench, _add_serve,
    _add_demo,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pixal3d",
        description="Pixel-aligned 3D asset generation from a single image.",
    )
    parser.add_argument("--version", action="version", version=f"pixal3d {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except InputError as err:
        print(f"pixal3d {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
