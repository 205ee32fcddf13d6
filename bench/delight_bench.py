"""How well each shading-removal estimator of `pixal3d.image_texels` recovers the base colour from a render.

For held-out procedural seeds, the eval's condition view (random lights and exposure, the training renderer) is
turned into an albedo estimate by each `ImageTexelOptions.delight` mode and compared with the ground truth's
base-colour G-buffer at the input camera (PSNR over the pixels both cover), beside the best single gain per image
(an oracle that knows the truth), and retinex at the fixed level 0.65 (the first default). CPU is fine: `python bench/delight_bench.py --seeds 1000020:1000036`.

Two oracle columns bound what a shading model from normals could add: "sh9, true normals" divides the linear
pixels by a second-order spherical-harmonics shading fitted (robustly, to the brightest channel) on the ground
truth's own normals, at the same 0.8-quantile level as retinex; "+ oracle gain" then also takes the best single
gain in linear light, for it and for retinex.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from pixal3d.eval import metrics as M
from pixal3d.eval.runner import EvalOptions, draw_view, ground_truth, procedural_assets
from pixal3d.image_texels import ImageTexelOptions, albedo_from_image
from pixal3d.render.shading import linear_to_srgb, srgb_to_linear


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """`[..., 3]` unit normals -> `[..., 9]` the real spherical harmonics up to order 2 (unnormalised)."""
    x, y, z = normals.unbind(-1)
    return torch.stack([torch.ones_like(x), x, y, z, x * y, y * z, x * z, x * x - y * y, 3 * z * z - 1], -1)


def sh_albedo(image: torch.Tensor, normals: torch.Tensor, quantile: float = 0.8) -> torch.Tensor:
    """Albedo estimate: the linear pixels divided by an order-2 SH shading of `normals` fitted to their brightest
    channel (iteratively reweighted on the log ratio, so albedo edges and highlights count less), mapped to the
    shading's `quantile` level."""
    alpha = image[..., 3:4]
    rgb = (image[..., :3] / alpha.clamp_min(1e-3)).clamp(0, 1)
    mask = (alpha[..., 0] > 0.5) & (normals.norm(dim=-1) > 0.5)
    linear = srgb_to_linear(rgb)
    basis = sh_basis(normals)
    a, b = basis[mask].double(), linear.max(-1).values[mask].double()
    w = torch.ones_like(b)
    for _ in range(5):
        coefficients = torch.linalg.lstsq(a * w[:, None].sqrt(), (b * w.sqrt())[:, None]).solution[:, 0]
        ratio = torch.log(b.clamp_min(1e-4) / (a @ coefficients).clamp_min(1e-3))
        w = 1 / (1 + (ratio / 0.25) ** 2)
    shading = (basis.double() @ coefficients).float().clamp_min(0.02)
    level = float(torch.quantile(shading[mask], quantile))
    out = linear_to_srgb((linear * (level / shading)[..., None]).clamp(0, 1))
    return torch.where(mask[..., None], out, rgb)


def with_oracle_gain(albedo: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`albedo` times the single gain, in linear light, that brings it closest to `truth` over `mask`."""
    a, t = srgb_to_linear(albedo), srgb_to_linear(truth)
    gain = float((a[mask] * t[mask]).sum() / (a[mask] ** 2).sum().clamp_min(1e-9))
    return linear_to_srgb(a * gain)


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
        sh = sh_albedo(image, truth.normals.cpu())
        row["sh9, true normals"] = float(M.psnr(sh, gt, both))
        row["retinex + oracle gain"] = float(M.psnr(with_oracle_gain(albedo_from_image(image), gt, both), gt, both))
        row["sh9 + oracle gain"] = float(M.psnr(with_oracle_gain(sh, gt, both), gt, both))
        for k, v in row.items():
            scores.setdefault(k, []).append(v)
        print(held.asset_id, "  ".join(f"{k} {v:.2f}" for k, v in row.items()), flush=True)
    print(f"mean base-colour PSNR over {end - start} views (dB): "
          + "  ".join(f"{k} {np.mean(v):.2f}" for k, v in scores.items()))


if __name__ == "__main__":
    main()
