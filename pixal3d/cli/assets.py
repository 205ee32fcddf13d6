"""`pixal3d preprocess`, `convert` and `generate`: image and mesh files in, files out."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from pixal3d.cli.common import add_model_options, load_pipeline, logger
from pixal3d.errors import InputError


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
def _add_export_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--export-device", choices=["cpu", "cuda", "auto", "torch-cpu"], default="cpu",
                   help="where the export (clean-up, simplification, UV charts, bake) runs: cpu (xatlas and numpy, "
                        "the reference; default), cuda (pure PyTorch on the GPU), auto (the GPU when there is one), "
                        "torch-cpu (the PyTorch path on the CPU, to compare the paths without a GPU)")


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="mesh (GLB/GLTF/OBJ) or saved voxels -> sparse PBR voxels -> textured GLB",
        description="Normalise a mesh into the volume cube, voxelise it at RESOLUTION, rebuild the surface, clean "
        "and simplify it to FACES, bake base-colour, metallic-roughness and normal textures, and write a GLB whose "
        "node puts the asset back at the source's size and position (--normalized: leave it in the unit cube). "
        "A .safetensors voxel file (from --save-voxels) skips the voxelisation.",
    )
    p.add_argument("input", type=Path, help="input .glb/.gltf/.obj (with .mtl, textures) or .safetensors voxels")
    p.add_argument("-o", "--output", type=Path, required=True, help="output .glb path (or .obj: OBJ + MTL + PNG textures)")
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
    _add_export_device(p)
    p.add_argument("--normalized", action="store_true",
                   help="leave the asset in the normalised unit cube (default: the GLB node puts it back at the "
                   "source's size and position)")
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
        keep_placement=not args.normalized,
        device=args.export_device,
    )
    print(f"wrote {args.output}")
    return 0


# -------------------------------------------------------------------------------------------------- generate
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="image(s) -> textured GLB: preprocess, FoV, three flow stages, decode, bake",
        description="Generate one textured, PBR GLB per input image (files, several files, or folders of images). "
        "Each GLB is written atomically; the run prints where every file went and the time of each step. "
        "Uses the shipped default model unless --model names another pipeline folder; --random-weights micro|tiny "
        "runs randomly initialised weights (the data flow only; the shapes are noise).",
    )
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files, or folders of images")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="output .glb (or .obj) for one image, else a folder (created) receiving NAME.glb per image")
    add_model_options(p, ["micro", "tiny"])
    p.add_argument("--background", choices=["auto", "grabcut", "none"], default="auto",
                   help="background removal for opaque images: auto (GrabCut when the image has no real alpha), "
                   "grabcut (always), none (keep the whole image as the object); default auto")
    p.add_argument("--fov", type=float, default=None,
                   help="horizontal field of view of the input image in DEGREES (default: estimated by the model)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling noise (default 0)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps per stage (default: the model's)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance weight (default: the model's)")
    p.add_argument("--resolution", type=int, default=None,
                   help="fine voxel resolution; each checkpoint decodes at one (default: the model's)")
    p.add_argument("--faces", type=int, default=100_000, help="face budget of the output mesh (default 100000)")
    p.add_argument("--texture-size", type=int, default=2048, help="texture side, 256..8192 pixels (default 2048)")
    p.add_argument("--low-vram", action="store_true", help="keep only the running step's weights on the GPU")
    _add_export_device(p)
    p.add_argument("--no-silhouette", action="store_true",
                   help="do not enforce the input silhouette (by default nothing is generated outside the input's "
                        "mask and every mask pixel is covered; off: ablations)")
    p.add_argument("--no-image-texels", action="store_true",
                   help="keep the texture stage's colours where the input camera sees the surface (by default "
                        "those texels take the input pixels' colour with the shading divided out; off: ablations)")
    p.add_argument("--preview", action="store_true",
                   help="also write NAME_preview.png: the input, the result from the input camera, their overlay "
                        "(magenta: silhouette disagreement) and 4 orbit renders")
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


OUTPUT_SUFFIXES = (".glb", ".obj")
"""File formats `generate` writes; any other suffix on `-o` is an error (not a folder named `out.stl/`). The keys of
`geometry.writers.WRITERS`, written out so that the CLI starts without the geometry stack (a test checks they agree)."""


def _generate_outputs(inputs: Sequence[Path], output: Path) -> list[Path]:
    """One output .glb per input: `output` itself for a single input ending in .glb, else `output/NAME.glb`.

    Nothing is created here: the folder is made when the first GLB is written (`_run_generate`).
    """
    suffix = output.suffix.lower()
    if len(inputs) == 1 and suffix in OUTPUT_SUFFIXES:
        if not output.parent.is_dir():
            raise InputError(f"output folder {output.parent} does not exist; create it first")
        return [output]
    if suffix in OUTPUT_SUFFIXES or (output.exists() and not output.is_dir()):
        raise InputError(f"-o {output}: with {len(inputs)} images the output must be a folder")
    if suffix and not output.is_dir():
        raise InputError(
            f"-o {output}: unsupported output format {output.suffix!r}; generate writes "
            f"{', '.join(OUTPUT_SUFFIXES)} files (give -o NAME.glb for one image, or a folder for several; "
            "a folder whose name has a dot must exist already)")
    stems = [p.stem for p in inputs]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise InputError(f"several inputs would write the same output name(s) {duplicates}; rename them")
    return [output / f"{stem}.glb" for stem in stems]


def _check_images(inputs: Sequence[Path], background: str) -> None:
    """Preprocess every input once, small, before the model loads: a bad image fails in milliseconds, not after
    the load (the pipeline preprocesses again at its own size; GrabCut on an opaque image costs about a second)."""
    from pixal3d.preprocess import preprocess_image

    for path in inputs:
        preprocess_image(path, size=16, background=background)


def _run_generate(args: argparse.Namespace) -> int:
    if args.fov is not None and not 0 < args.fov < 180:
        raise InputError(f"--fov is in degrees and must be in (0, 180), got {args.fov}")
    from pixal3d.geometry.export import ExportOptions

    # Everything that can be checked without the model is checked before it loads (seconds under load).
    options = ExportOptions(faces=args.faces, texture_size=args.texture_size, device=args.export_device)
    inputs = _generate_inputs(args.images)
    outputs = _generate_outputs(inputs, args.output)
    _check_images(inputs, args.background)
    pipe = load_pipeline(args)
    fov = None if args.fov is None else math.radians(args.fov)
    made = [] if outputs[0].parent.exists() else [outputs[0].parent]
    try:
        return _generate_each(pipe, inputs, outputs, fov, args, options)
    finally:
        for folder in made:  # a folder this run created stays only if it holds something
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


def _generate_each(pipe, inputs: Sequence[Path], outputs: Sequence[Path], fov: float | None,
                   args: argparse.Namespace, options) -> int:
    """Generate and export every input (`batch.generate_batch`: each export overlaps the next image's sampling)."""
    from pixal3d.asset import contact_sheet
    from pixal3d.batch import generate_batch
    from pixal3d.preprocess import save_png
    from pixal3d.stages import EmptyStructureError

    outputs[0].parent.mkdir(parents=True, exist_ok=True)
    logger.info("generating %d image(s) -> %s", len(inputs), ", ".join(str(o) for o in outputs[:3])
                + (", ..." if len(outputs) > 3 else ""))
    items = generate_batch(pipe, inputs, outputs, options, fov=fov, seed=args.seed, steps=args.steps,
                           guidance=args.guidance, resolution=args.resolution, low_vram=args.low_vram,
                           silhouette=not args.no_silhouette, image_texels=not args.no_image_texels,
                           background=args.background)
    done = 0
    try:
        for item in items:
            done += 1
            asset, glb = item.asset, item.output
            print(f"wrote {glb} (from {item.image}; fov {math.degrees(asset.camera.fov):.1f} deg, {asset.fov_source})")
            if args.preview:
                preview = glb.with_name(f"{glb.stem}_preview.png")
                save_png(contact_sheet(glb, asset.image, camera=asset.camera), preview)
                print(f"wrote {preview}")
            print("  time: " + ", ".join(f"{k} {v:.2f} s" for k, v in item.timings.items())
                  + f"; total {sum(item.timings.values()):.2f} s")
    except EmptyStructureError as err:
        print(f"pixal3d generate: {inputs[done]}: {err}", file=sys.stderr)
        return 1
    return 0
