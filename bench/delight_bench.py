"""How well each shading-removal estimator of `pixal3d.image_texels` recovers the base colour from a render.

For held-out procedural seeds, the eval's condition view (random lights and exposure, the training renderer) is
turned into an albedo estimate by each `ImageTexelOptions.delight` mode and compared with the ground truth's
base-colour G-buffer at the input camera (PSNR over the pixels both cover), beside the best single gain per image
(an oracle that knows the truth), and retinex at the fixed level 0.65 (the first default). CPU is fine: `python bench/delight_bench.py --seeds 1000020:1000036`.
"""

from __future__ import annotations

import argparse

import numpy as np

from pixal3d.eval import metrics as M
from pixal3d.eval.runner import EvalOptions, draw_view, ground_truth, procedural_assets
from pixal3d.image_texels import ImageTexelOptions, albedo_from_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1000020:1000036", help="START:END procedural seeds")
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    start, end = (int(x) for x in args.seeds.split(":"))
    options = EvalOptions(views=1, image_size=args.size, samples=1000)
    scores: dict[str, list[float]] = {}
    for held in procedural_assets(start, end):
        sample = draw_view(held, 0, options)
        truth = ground_truth(held, sample, options, "cpu").input_render
        image = sample.image.float() / 255
        both = (image[..., 3] > 0.5) & (truth.alpha.cpu() > 0.5)
        gt = truth.base_color.cpu()
        row = {}
        for mode in ("none", "gain", "retinex"):
            albedo = albedo_from_image(image, ImageTexelOptions(delight=mode))
            row[mode] = float(M.psnr(albedo, gt, both))
        fixed = albedo_from_image(image, ImageTexelOptions(delight="retinex", target_albedo=0.65))
        row["retinex at 0.65"] = float(M.psnr(fixed, gt, both))  # the first default: a fixed brightness level
        raw = albedo_from_image(image, ImageTexelOptions(delight="none"))
        gain = float((raw[both] * gt[both]).sum() / (raw[both] ** 2).sum().clamp_min(1e-9))
        row["oracle gain"] = float(M.psnr((raw * gain).clamp(0, 1), gt, both))
        for k, v in row.items():
            scores.setdefault(k, []).append(v)
        print(held.asset_id, "  ".join(f"{k} {v:.2f}" for k, v in row.items()), flush=True)
    print(f"mean base-colour PSNR over {end - start} views (dB): "
          + "  ".join(f"{k} {np.mean(v):.2f}" for k, v in scores.items()))


if __name__ == "__main__":
    main()
