"""`pixal3d data ...`: procedural objects, view-aligned samples, mesh ingestion, a look at a data folder."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

from pixal3d.errors import InputError


# --------------------------------------------------------------------------------------------- data
def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data",
        help="training data: procedural objects, view-aligned samples, mesh ingestion",
        description="The data engine: seeded procedural PBR objects, and view-aligned training samples (image, "
        "FoV, sparse PBR voxels) made from them or from your own meshes, written as resumable shards. "
        "Run 'pixal3d data COMMAND --help' for each command's options.",
    )
    data_sub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    for add in DATA_COMMANDS:
        add(data_sub)


def _add_data_procedural(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "procedural",
        help="export one seeded procedural PBR object as a GLB",
        description="Build the procedural object of SEED (family = the family set's families[seed % count] "
        "unless --family) inside the unit cube, y up, and write it as a binary glTF with PBR materials.",
    )
    p.add_argument("--seed", type=int, required=True, help="integer >= 0")
    p.add_argument("-o", "--output", type=Path, required=True, help="output .glb path (written atomically)")
    p.add_argument("--family", default=None, help="force a family (e.g. chair, mug, car, cut_block); default: "
                   "the seed's")
    _add_families(p)
    p.set_defaults(func=_run_data_procedural)


def _add_families(p: argparse.ArgumentParser) -> None:
    p.add_argument("--families", default="classic", metavar="SET",
                   help="procedural family set: classic (the 19 original families, default; seeds keep their "
                   "objects), zeroverse (primitive_stack, cut_block, wireframe) or all (classic + zeroverse)")


def _run_data_procedural(args: argparse.Namespace) -> int:
    from pixal3d.data.procedural import export_glb, generate

    obj = generate(args.seed, family=args.family, family_set=args.families)
    export_glb(obj, args.output)
    print(f"wrote {args.output} ({obj.family}, seed {obj.seed}, {len(obj.scene.geometry)} parts)")
    return 0


def _add_data_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="render + align + voxelise procedural objects into sample shards",
        description="Make K view-aligned training samples of each of N procedural objects (seeds O..O+N-1 of "
        "the family set --families) and write them as safetensors shards with a JSON index to DIR. Resumable: "
        "rerun the same command to finish an interrupted run.",
    )
    p.add_argument("--procedural", type=int, required=True, metavar="N", help="number of procedural objects")
    p.add_argument("--views", type=int, default=4, metavar="K", help="views per object (default 4)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="DIR", help="data folder")
    _add_sample_options(p)
    p.add_argument("--seed-offset", type=int, default=0, metavar="O", help="first procedural seed (default 0)")
    _add_families(p)
    p.set_defaults(func=_run_data_generate)


def _add_sample_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resolution", type=int, default=256, help="fine voxel resolution R_hr (default 256)")
    p.add_argument("--coarse", type=int, default=64, help="coarse occupancy resolution (default 64)")
    p.add_argument("--size", type=int, default=512, help="image side S in pixels (default 512)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--rank", type=int, default=0, help="this process's rank (default 0)")
    p.add_argument("--world-size", type=int, default=1, help="number of ranks splitting the work (default 1)")
    p.add_argument("--device", default="cpu", help="render/voxelise device, e.g. cuda (default cpu)")
    p.add_argument("--batch", type=int, default=None, metavar="B",
                   help="objects per worker job, all their views rendered and voxelised together: fewer GPU kernel "
                   "launches per sample, more memory per worker; the samples do not change (default 8 on a GPU, "
                   "1 on the CPU)")


def _sample_options(args: argparse.Namespace) -> object:
    from pixal3d.data.units import SampleOptions

    return SampleOptions(image_size=args.size, resolution=args.resolution, coarse=args.coarse)


def _print_summary(summary: object, output: Path) -> int:
    for item in summary.skipped:
        print(f"skipped {item['id']}: {item['reason']}")
    for item in summary.failed:
        print(f"failed {item['id']}: {item['reason']}")
    print(f"{output}: {summary.line()}")
    return 1 if summary.failed else 0


def _run_data_generate(args: argparse.Namespace) -> int:
    from pixal3d.data.shards import write_shards
    from pixal3d.data.units import procedural_units

    units = procedural_units(args.procedural, args.views, args.seed_offset, family_set=args.families)
    summary = write_shards(units, args.output, _sample_options(args), workers=args.workers, rank=args.rank,
                           world_size=args.world_size, device=args.device, batch=args.batch)
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
    from pixal3d.data.shards import ingest_folder

    summary = ingest_folder(args.mesh_dir, args.output, args.views, _sample_options(args), workers=args.workers,
                            rank=args.rank, world_size=args.world_size, device=args.device, batch=args.batch)
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
    from pixal3d.data.inspect import sample_sheet
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


