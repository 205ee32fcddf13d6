"""The three VAEs at micro size: shapes, gradients, invariants, and the shape VAE overfitting one object."""

from __future__ import annotations

import math

import pytest
import torch

from pixal3d.errors import InputError
from pixal3d.eval.metrics import chamfer_l1, sample_surface
from pixal3d.geometry.dual_mesh import voxels_to_mesh
from pixal3d.models.shape_vae import ShapeVAE, ShapeVAEConfig, SparseDownsample
from pixal3d.models.structure_vae import StructureVAE, StructureVAEConfig, active_coords
from pixal3d.models.texture_vae import TextureVAE, TextureVAEConfig
from pixal3d.sparse import SparseTensor
from pixal3d.training.objectives import shape_vae_loss, structure_vae_loss, texture_vae_loss
from pixal3d.training.synthetic import collate_voxels, synthetic_voxels


@pytest.fixture(scope="module")
def batch16() -> dict[str, torch.Tensor]:
    """Two synthetic objects at R_hr = 16 with an 8^3 coarse occupancy."""
    return collate_voxels([synthetic_voxels(0, i, 16, 2) for i in range(2)], 8)


def _grads_finite(model: torch.nn.Module) -> bool:
    grads = [p.grad for p in model.parameters()]
    return all(g is not None and bool(torch.isfinite(g).all()) for g in grads)


def test_structure_vae_forward_backward(batch16):
    model = StructureVAE(StructureVAEConfig(resolution=8, latent_resolution=2, latent_channels=2,
                                            channels=(4, 8, 8), norm_groups=4))
    loss, metrics = structure_vae_loss(model, batch16, torch.Generator().manual_seed(0))
    loss.backward()
    assert _grads_finite(model) and set(metrics) == {"bce", "dice", "kl", "iou"}
    mean, logvar = model.encode(batch16["occupancy"])
    assert mean.shape == logvar.shape == (2, 2, 2, 2, 2)
    logits = model.decode(mean)
    assert logits.shape == (2, 1, 8, 8, 8)
    coords = active_coords(logits)
    assert coords.dtype == torch.int32 and coords.shape[1] == 4
    with pytest.raises(ValueError, match=r"\[B, 1, 8, 8, 8\]"):
        model.encode(torch.zeros(1, 1, 4, 4, 4))


def test_vae_configs_reject_impossible_sizes():
    with pytest.raises(InputError, match="power of two"):
        StructureVAEConfig(resolution=64, latent_resolution=12)
    with pytest.raises(InputError, match="3 entries"):
        ShapeVAEConfig(resolution=32, token_resolution=8, channels=(8, 16))
    with pytest.raises(InputError, match="power of two"):
        TextureVAEConfig(resolution=32, token_resolution=32, channels=(8,))


def test_shape_vae_forward_backward_and_decode(batch16):
    model = ShapeVAE(ShapeVAEConfig(resolution=16, token_resolution=4, channels=(8, 8, 16), latent_channels=4))
    n = batch16["coords"].shape[0]
    out = model(batch16["coords"], batch16["vertex"], batch16["edges"], generator=torch.Generator().manual_seed(0))
    assert out.vertex.shape == (n, 3) and out.edge_logits.shape == (n, 3, 3)
    assert [t.shape[1] for t in out.occupancy_logits] == [8, 8]
    # Teacher forcing: every level's true children are exactly the next level's voxels.
    assert int(out.occupancy_targets[-1].sum()) == n
    loss, _ = shape_vae_loss(model, batch16, torch.Generator().manual_seed(0))
    loss.backward()
    assert _grads_finite(model)

    model.eval()
    mean, _ = model.encode(batch16["coords"], batch16["vertex"], batch16["edges"])
    assert mean.resolution == 4 and mean.feats.shape[1] == 4
    decoded = model.decode(mean)
    assert len(decoded) == 2
    for voxels in decoded:
        assert voxels.resolution == 16 and voxels.coords.shape[1] == 3 and voxels.edges.dtype == torch.int8
        assert bool(((voxels.vertex >= 0) & (voxels.vertex <= 1)).all())
        assert set(voxels.edges.unique().tolist()) <= {-1, 0, 1}
    with pytest.raises(ValueError, match="sorted by key"):
        model.encode(batch16["coords"].flip(0), batch16["vertex"], batch16["edges"])


def test_texture_vae_forward_backward_and_decode(batch16):
    model = TextureVAE(TextureVAEConfig(resolution=16, token_resolution=4, channels=(8, 8, 16), latent_channels=4))
    loss, metrics = texture_vae_loss(model, batch16, torch.Generator().manual_seed(0))
    loss.backward()
    assert _grads_finite(model) and "l1" in metrics
    model.eval()
    mean, _ = model.encode(batch16["coords"], batch16["attrs"])
    attrs = model.decode(mean, batch16["coords"])
    assert attrs.shape == batch16["attrs"].shape and bool(((attrs >= 0) & (attrs <= 1)).all())


def test_sparse_downsample_is_a_strided_dense_conv():
    torch.manual_seed(0)
    grid = torch.randn(2, 3, 8, 8, 8) * (torch.rand(2, 1, 8, 8, 8) < 0.3)
    x = SparseTensor.from_dense(grid)
    down = SparseDownsample(3, 5)
    conv = torch.nn.Conv3d(3, 5, 2, stride=2)
    # Child c = (di, dj, dk) in subdivide order maps to the dense kernel tap [di, dj, dk].
    conv.weight.data = down.weight.data.reshape(2, 2, 2, 3, 5).permute(4, 3, 0, 1, 2).clone()
    conv.bias.data = down.bias.data.clone()
    y = down(x)
    dense = conv(grid).permute(0, 2, 3, 4, 1)  # (B, C, R, R, R) -> (B, R, R, R, C)
    c = y.coords.long()
    torch.testing.assert_close(y.feats, dense[c[:, 0], c[:, 1], c[:, 2], c[:, 3]], atol=1e-5, rtol=1e-5)


def test_synthetic_voxels_are_a_consistent_dual_grid():
    v = synthetic_voxels(1, 0, 24, 3)
    assert len(v) > 100 and bool(((v.vertex >= 0) & (v.vertex <= 1)).all())
    # A crossing primal edge is shared by 4 voxels; all of them hold surface.
    active = torch.zeros(24, 24, 24, dtype=torch.bool)
    active[tuple(v.coords.long().T)] = True
    for axis in range(3):
        crossing = v.coords[v.edges[:, axis] != 0].long()
        others = [d for d in range(3) if d != axis]
        for da, db in ((0, -1), (-1, 0), (-1, -1)):
            c = crossing.clone()
            c[:, others[0]] += da
            c[:, others[1]] += db
            assert bool(active[tuple(c.T)].all())
    assert v.attrs.shape == (len(v), 6) and bool((v.attrs[:, 5] == 1).all())


def test_synthetic_sphere_meshes_outward_with_its_volume():
    """Edge-flag signs agree with `voxels_to_mesh`: the dual mesh of a sphere is closed, outward, of its volume."""
    v = synthetic_voxels(0, 1, 32, 1)  # object 1 of seed 0 is a single sphere
    mesh = voxels_to_mesh(v)
    mesh.merge_vertices()
    radius = (v.positions() - v.positions().mean(dim=0)).norm(dim=1).mean()
    assert mesh.is_watertight and mesh.volume > 0
    assert abs(mesh.volume / (4 / 3 * math.pi * float(radius) ** 3) - 1) < 0.05


def test_shape_vae_reconstructs_one_object():
    """Short overfit at R_hr = 32: decoded (thresholded, not teacher-forced) voxels within Chamfer-L1 2 / R_hr."""
    torch.manual_seed(0)
    r = 32
    target = synthetic_voxels(0, 3, r, 2)
    batch = collate_voxels([target], 8)
    model = ShapeVAE(ShapeVAEConfig(resolution=r, token_resolution=8, channels=(16, 32, 32), latent_channels=8,
                                    kl_weight=1e-6))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(40):
        loss, _ = shape_vae_loss(model, batch, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    mean, _ = model.encode(batch["coords"], batch["vertex"], batch["edges"])
    decoded = model.decode(mean)[0]
    # Compare the dual-grid meshes (DESIGN section 4): dual vertices and edge flags both matter.
    surfaces = []
    for voxels in (decoded, target):
        mesh = voxels_to_mesh(voxels)
        points, _ = sample_surface(torch.as_tensor(mesh.vertices), torch.as_tensor(mesh.faces), 20000,
                                   torch.Generator().manual_seed(0))
        surfaces.append(points)
    assert float(chamfer_l1(*surfaces)) <= 2 / r
    keys = lambda v: set((v.coords[:, 0] * r * r + v.coords[:, 1] * r + v.coords[:, 2]).tolist())  # noqa: E731
    a, b = keys(decoded), keys(target)
    assert len(a & b) / len(a | b) >= 0.9
