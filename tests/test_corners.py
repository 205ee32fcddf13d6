"""Corner signs -> edge flags (`pixal3d.geometry.corners`) and the shape VAE's "corners" decoder: closed surfaces
stay closed by construction, open sheets still mesh, the "edges" default is unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from pixal3d.geometry.corners import connected_components, corner_targets, corner_voxels
from pixal3d.geometry.dual_grid import mesh_to_voxels
from pixal3d.geometry.dual_mesh import voxels_to_mesh
from pixal3d.geometry.voxels import SparseVoxels
from pixal3d.models.shape_vae import ShapeVAE, ShapeVAEConfig
from pixal3d.sparse import SparseTensor
from pixal3d.training.objectives import shape_vae_loss
from pixal3d.training.synthetic import collate_voxels, synthetic_voxels


def open_edges(mesh: trimesh.Trimesh) -> tuple[int, int]:
    """`(edges used by one triangle, all edges)` of a triangle mesh, vertices merged by position."""
    merged = trimesh.Trimesh(mesh.vertices, mesh.faces, process=True)
    _, counts = np.unique(np.sort(merged.edges, axis=1), axis=0, return_counts=True)
    return int((counts == 1).sum()), len(counts)


def with_edges(v: SparseVoxels, edges: torch.Tensor) -> SparseVoxels:
    return SparseVoxels(v.coords, v.vertex, edges, None, v.resolution)


@pytest.fixture(scope="module")
def closed_shapes() -> dict[str, SparseVoxels]:
    """A sphere and a rotated box (faces off the grid planes), voxelised from their meshes at R = 64."""
    box = trimesh.creation.box((0.61, 0.51, 0.41))
    box.apply_transform(trimesh.transformations.rotation_matrix(0.5, [1.0, 2.0, 3.0]))
    meshes = {"sphere": trimesh.creation.icosphere(4, 0.4), "box": box}
    return {name: mesh_to_voxels(m, 64, with_attributes=False) for name, m in meshes.items()}


@pytest.fixture(scope="module")
def sheet() -> SparseVoxels:
    """An open, flat square sheet (two triangles), off the grid planes."""
    mesh = trimesh.Trimesh([[-0.4, -0.4, 0.013], [0.4, -0.4, 0.013], [0.4, 0.4, 0.013], [-0.4, 0.4, 0.013]],
                           [[0, 1, 2], [0, 2, 3]])
    return mesh_to_voxels(mesh, 64, with_attributes=False)


def test_connected_components_of_a_small_graph():
    u, v = torch.tensor([5, 1, 3, 6]), torch.tensor([6, 2, 2, 0])
    assert connected_components(8, u, v).tolist() == [0, 1, 1, 1, 4, 0, 0, 7]


@pytest.mark.parametrize("name", ["sphere", "box"])
def test_ground_truth_corner_signs_give_back_every_crossing(closed_shapes, name):
    v = closed_shapes[name]
    inside, open_voxel = corner_targets(v.coords, v.edges, v.resolution)
    assert not bool(open_voxel.any())  # a closed, consistently oriented surface has no open voxel
    assert 0 < int(inside.sum()) < inside.numel()
    decoded = corner_voxels(v, inside.float() * 2 - 1)
    assert torch.equal(decoded.coords, v.coords) and torch.equal(decoded.edges, v.edges)


@pytest.mark.parametrize("name", ["sphere", "box"])
def test_noisy_corner_logits_on_a_voxel_subset_mesh_closed(closed_shapes, name):
    """Closed by construction: noisy signs on a random subset of the voxels (a decoder that got the occupancy
    and some signs wrong) still give a mesh with no open edge and the surface's extent, where the same kind of
    mistakes in per-voxel edge flags leave holes."""
    v = closed_shapes[name]
    g = torch.Generator().manual_seed(0)
    inside, _ = corner_targets(v.coords, v.edges, v.resolution)
    truth = inside.float() * 2 - 1
    faces = len(voxels_to_mesh(v).faces)
    for drop in (0.0, 0.1, 0.2):
        keep = torch.rand(len(v), generator=g) >= drop
        noisy = truth[keep] + 1.5 * torch.randn(int(keep.sum()), 8, generator=g)
        sub = SparseVoxels(v.coords[keep], v.vertex[keep], v.edges[keep], None, v.resolution)
        mesh = voxels_to_mesh(corner_voxels(sub, noisy))
        assert open_edges(mesh)[0] == 0 and len(mesh.faces) > 0.9 * faces
        assert open_edges(voxels_to_mesh(corner_voxels(sub, noisy, repair_rounds=0)))[0] == 0
        if drop:
            assert open_edges(voxels_to_mesh(sub))[0] > 0
    dropped = torch.where(torch.rand(v.edges.shape, generator=g) < 0.05, torch.zeros_like(v.edges), v.edges)
    assert open_edges(voxels_to_mesh(with_edges(v, dropped)))[0] > 0


def test_open_sheet_still_meshes_through_the_fallback(sheet):
    inside, open_voxel = corner_targets(sheet.coords, sheet.edges, sheet.resolution)
    assert bool(open_voxel.any())  # its two sides meet around the rim: the signs cannot describe the rim
    logits = inside.float() * 2 - 1
    decoded = corner_voxels(sheet, logits, open_voxel)
    assert torch.equal(decoded.coords, sheet.coords) and torch.equal(decoded.edges, sheet.edges)
    truth, mesh = voxels_to_mesh(sheet), voxels_to_mesh(decoded)
    assert len(mesh.faces) == len(truth.faces) > 1000
    assert open_edges(mesh) == open_edges(truth) and open_edges(mesh)[0] > 0
    with pytest.raises(ValueError, match="corner_logits"):
        corner_voxels(sheet, logits[:, :4], open_voxel)


def _overfit(target: SparseVoxels, steps: int) -> tuple[SparseVoxels, dict[str, torch.Tensor]]:
    """Train a micro "corners" shape VAE on one object; decode its encoding (thresholded occupancy)."""
    torch.manual_seed(0)
    r = target.resolution
    batch = collate_voxels([target], r // 4)
    model = ShapeVAE(ShapeVAEConfig(resolution=r, token_resolution=r // 4, channels=(16, 32, 32), latent_channels=8,
                                    kl_weight=1e-6, decoder_target="corners"))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        loss, metrics = shape_vae_loss(model, batch, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    mean, _ = model.encode(batch["coords"], batch["vertex"], batch["edges"])
    return model.decode(mean)[0], metrics


@pytest.mark.parametrize("index", [1, 0], ids=["sphere", "cube"])
def test_corner_vae_keeps_a_watertight_sphere_and_cube_closed(index):
    """Encode -> decode (thresholded occupancy, not teacher-forced) after a short overfit at micro size."""
    target = synthetic_voxels(0, index, 32, 1)  # objects 1 and 0 of seed 0: one sphere, one rotated box
    decoded, metrics = _overfit(target, 80)
    assert metrics["open_fraction"] == 0
    mesh = voxels_to_mesh(decoded)
    assert open_edges(mesh)[0] == 0 and len(mesh.faces) >= 0.9 * len(voxels_to_mesh(target).faces)
    mesh.merge_vertices()
    assert len(mesh.split(only_watertight=False)) == 1


def test_corner_vae_still_meshes_an_open_sheet():
    """The sheet's rim voxels train the open flag; decoded, the sheet comes back through the edge-flag fallback."""
    mesh = trimesh.Trimesh([[-0.2, -0.2, 0.013], [0.2, -0.2, 0.013], [0.2, 0.2, 0.013], [-0.2, 0.2, 0.013]],
                           [[0, 1, 2], [0, 2, 3]])
    target = mesh_to_voxels(mesh, 64)
    decoded, metrics = _overfit(target, 60)
    assert metrics["open_fraction"] > 0
    faces = len(voxels_to_mesh(target).faces)
    assert abs(len(voxels_to_mesh(decoded).faces) - faces) <= 0.05 * faces


def test_corner_config_heads_and_validation():
    assert ShapeVAEConfig().decoder_target == "edges"  # the shipped model's decoder
    edges = ShapeVAE(ShapeVAEConfig(resolution=16, token_resolution=4, channels=(8, 8, 8)))
    corners = ShapeVAE(ShapeVAEConfig(resolution=16, token_resolution=4, channels=(8, 8, 8), decoder_target="corners"))
    assert edges.decoder.proj_out.out_features == 12 and corners.decoder.proj_out.out_features == 21
    with pytest.raises(ValueError, match="decoder_target"):
        ShapeVAEConfig(decoder_target="faces")


def test_edges_decoder_is_the_per_voxel_edge_classification():
    """The "edges" default decodes exactly as before: flags = argmax of the head's 3-way edge logits."""
    torch.manual_seed(0)
    model = ShapeVAE(ShapeVAEConfig(resolution=16, token_resolution=4, channels=(8, 8, 8))).eval()
    batch = collate_voxels([synthetic_voxels(0, 3, 16, 2)], 4)
    mean, _ = model.encode(batch["coords"], batch["vertex"], batch["edges"])
    (voxels,) = model.decode(mean, threshold=-1e9)  # keep every child: a deterministic voxel set
    fine = model.decoder(mean, threshold=-1e9).fine
    fine = SparseTensor.sorted(fine.coords, fine.feats.float(), fine.resolution, 1)
    assert torch.equal(voxels.edges, (fine.feats[:, 3:].reshape(-1, 3, 3).argmax(-1) - 1).to(torch.int8))
    assert torch.equal(voxels.vertex, torch.sigmoid(fine.feats[:, :3]))


def test_shipped_shape_vae_still_decodes_edge_flags(tmp_path):
    """The shipped checkpoint loads strictly as an "edges" decoder; a "corners" VAE saves and loads back as one."""
    from pathlib import Path

    import pixal3d
    from pixal3d.weights import load_component, save_component

    shipped = load_component(Path(pixal3d.__file__).parent / "weights" / "default" / "shape_vae", "shape_vae").eval()
    assert shipped.config.decoder_target == "edges" and shipped.decoder.proj_out.out_features == 12
    g = torch.Generator().manual_seed(0)
    coords = torch.tensor([[0, 15, 15, 15], [0, 15, 15, 16], [0, 16, 15, 15]], dtype=torch.int32)
    latent = SparseTensor(coords, torch.randn(3, shipped.config.latent_channels, generator=g), 32)
    (voxels,) = shipped.decode(latent)
    fine = shipped.decoder(latent).fine
    fine = SparseTensor.sorted(fine.coords, fine.feats.float(), fine.resolution, 1)
    assert torch.equal(voxels.coords, fine.coords[:, 1:])
    assert torch.equal(voxels.edges, (fine.feats[:, 3:].reshape(-1, 3, 3).argmax(-1) - 1).to(torch.int8))
    config = ShapeVAEConfig(resolution=16, token_resolution=4, channels=(8, 8, 8), decoder_target="corners")
    save_component(ShapeVAE(config), tmp_path / "shape_vae")
    assert load_component(tmp_path / "shape_vae", "shape_vae").config.decoder_target == "corners"
