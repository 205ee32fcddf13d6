"""The FoV head's error on the eval's condition views, with and without test-time mirror averaging.

For held-out procedural seeds and/or a folder of meshes (the eval's `--data`), each asset's view 0 is drawn as
`pixal3d eval` draws it (`draw_view`: same camera, lights and crop FoV), preprocessed and encoded as the pipeline
does, and the model's FoV head predicts its FoV. A mirror image has the same FoV, so "mirror" averages the head's
prediction on the image and on its left-right mirror (a test-time option measured here, not in the pipeline). Only
the encoder and the head run, so this is quick on the CPU:

    python bench/fov_bench.py --seeds 1000000:1000200
    python bench/fov_bench.py --seeds 0:0 --data ../shared/assets/dev --model pixal3d/weights/default
"""

from __future__ import annotations

import argparse
import math
import statistics

import torch

from pixal3d.eval.runner import EvalOptions, draw_view, folder_assets, procedural_assets
from pixal3d.pipeline import Pixal3DPipeline
from pixal3d.stages import encode_images, estimate_fov


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pixal3d/weights/default")
    parser.add_argument("--seeds", default="1000000:1000050", help="START:END procedural seeds (0:0 for none)")
    parser.add_argument("--data", help="a folder of meshes, as pixal3d eval --data")
    args = parser.parse_args()
    pipe = Pixal3DPipeline.from_pretrained(args.model)
    if pipe.fov_head is None:
        raise SystemExit(f"{args.model} has no FoV head")
    options = EvalOptions(views=1, image_size=pipe.settings.image_size, samples=1000)
    start, end = (int(x) for x in args.seeds.split(":"))
    assets = (list(procedural_assets(start, end)) if end > start else []) + \
        (list(folder_assets(args.data)) if args.data else [])
    errors: dict[str, list[float]] = {"single": [], "mirror": []}
    for held in assets:
        sample = draw_view(held, 0, options)
        _, images = pipe.preprocess([sample.image.numpy()])
        with torch.no_grad():
            plain = estimate_fov(pipe.fov_head, encode_images(pipe.encoder, images)[0])
            mirrored = estimate_fov(pipe.fov_head, encode_images(pipe.encoder, images.flip(-1))[0])
        true = math.degrees(sample.fov)
        row = {"single": math.degrees(plain), "mirror": math.degrees(0.5 * (plain + mirrored))}
        for key, value in row.items():
            errors[key].append(abs(value - true))
        print(f"{held.asset_id}: true {true:.1f}, " + ", ".join(f"{k} {v:.1f}" for k, v in row.items()), flush=True)
    for key, values in errors.items():
        print(f"{key}: FoV error over {len(values)} views: mean {statistics.fmean(values):.2f} deg, median "
              f"{statistics.median(values):.2f} deg, within 5 deg {sum(v <= 5 for v in values)}")


if __name__ == "__main__":
    main()
