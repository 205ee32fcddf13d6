"""SparseTensor: hashing, neighbour gather, subdivide/downsample/prune, and the sparse conv vs a dense conv3d."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pixal3d.sparse import SparseConv3d, SparseTensor, keys_to_coords


def random_sparse(batch: int = 2, resolution: int = 8, channels: int = 5, fill: float = 0.3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(batch, resolution, resolution, resolution, generator=g) < fill
    grid = torch.randn(batch, channels, resolution, resolution, resolution, generator=g) * mask[:, None]
    return SparseTensor.from_dense(grid, mask), grid


def test_keys_round_trip_and_order():
    x, _ = random_sparse()
    keys = x.keys()
    assert torch.equal(keys_to_coords(keys, x.resolution), x.coords)
    assert bool((keys[1:] > keys[:-1]).all())  # from_dense yields key order
    assert x.coords.dtype == torch.int32


def test_batch_offsets_and_counts():
    x, grid = random_sparse(batch=3)
    offsets = x.batch_offsets
    assert offsets.shape == (4,) and offsets[-1] == x.coords.shape[0]
    for b in range(3):
        assert torch.all(x.coords[offsets[b] : offsets[b + 1], 0] == b)
    assert [t.shape[0] for t in x.unbind()] == x.counts.tolist()


def test_unsorted_coords_raise_and_sorted_fixes():
    x, _ = random_sparse()
    perm = torch.randperm(x.coords.shape[0], generator=torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="grouped by batch"):
        SparseTensor(x.coords[perm], x.feats[perm], x.resolution)
    y = SparseTensor.sorted(x.coords[perm], x.feats[perm], x.resolution)
    assert torch.equal(y.coords, x.coords) and torch.equal(y.feats, x.feats)


def test_lookup_finds_rows_and_misses():
    x, _ = random_sparse()
    perm = torch.randperm(x.coords.shape[0], generator=torch.Generator().manual_seed(2))
    assert torch.equal(x.lookup(x.coords[perm]), perm)
    missing = torch.tensor([[0, -1, 0, 0], [0, 8, 0, 0], [5, 0, 0, 0]], dtype=torch.int32)
    assert torch.all(x.lookup(missing) == -1)


def test_neighbours_match_dense_occupancy():
    x, grid = random_sparse(batch=1, resolution=6)
    nbr = x.neighbours(3)
    assert nbr.shape == (x.coords.shape[0], 27)
    assert torch.equal(nbr[:, 13], torch.arange(x.coords.shape[0]))  # the centre is the voxel itself
    occ = F.pad((grid != 0).any(1).float(), (1, 1, 1, 1, 1, 1))[0]
    c = x.coords.long()
    for n in range(0, c.shape[0], 7):
        _, i, j, k = c[n].tolist()
        expected = occ[i : i + 3, j : j + 3, k : k + 3].reshape(-1) > 0
        assert torch.equal(nbr[n] >= 0, expected)


def test_subdivide_downsample_prune():
    x, _ = random_sparse()
    fine = x.subdivide()
    assert fine.resolution == 2 * x.resolution and fine.coords.shape[0] == 8 * x.coords.shape[0]
    assert torch.equal(fine.coords[8 * 3 : 8 * 4, 1:].long() // 2, x.coords[3:4, 1:].long().expand(8, 3))
    coarse, parent = fine.downsample()
    assert torch.equal(coarse.coords, x.coords)
    assert torch.allclose(coarse.feats, x.feats)
    assert torch.equal(parent, torch.arange(x.coords.shape[0]).repeat_interleave(8))
    keep = fine.feats[:, 0] > 0
    pruned = fine.prune(keep)
    assert pruned.coords.shape[0] == int(keep.sum()) and pruned.resolution == fine.resolution
    assert bool((pruned.coords[1:, 0] >= pruned.coords[:-1, 0]).all())  # still grouped by batch


def test_dense_round_trip():
    x, grid = random_sparse()
    assert torch.equal(x.dense(), grid)
    y = x.replace(feats=x.feats * 2)
    assert y.coords is x.coords and torch.equal(y.dense(), grid * 2)


def test_sparse_conv_equals_dense_conv3d():
    x, grid = random_sparse(batch=2, resolution=7, channels=4)
    conv = SparseConv3d(4, 6, kernel_size=3)
    y = conv(x)
    dense = F.conv3d(grid, conv.weight, conv.bias, padding=1)  # (B, 6, R, R, R)
    c = x.coords.long()
    expected = dense.permute(0, 2, 3, 4, 1)[c[:, 0], c[:, 1], c[:, 2], c[:, 3]]
    assert torch.allclose(y.feats, expected, atol=1e-5)


def test_sparse_conv_backward_and_chunks():
    x, _ = random_sparse(channels=3)
    feats = x.feats.clone().requires_grad_(True)
    conv = SparseConv3d(3, 2, kernel_size=3, chunk_size=17)
    y = conv(x.replace(feats=feats))
    y.feats.square().sum().backward()
    assert feats.grad is not None and conv.weight.grad is not None
    full = SparseConv3d(3, 2, kernel_size=3)
    full.load_state_dict(conv.state_dict())
    assert torch.allclose(full(x).feats, conv(x).feats, atol=1e-6)
    with torch.no_grad():  # inference gathers in chunks of chunk_size rows
        assert torch.allclose(conv(x).feats, y.feats, atol=1e-6)
        assert torch.allclose(full(x).feats, y.feats, atol=1e-6)


@pytest.mark.parametrize("keep_columns", [True, False])
@pytest.mark.parametrize("kernel_size", [3, 5])
def test_sparse_conv_gradients_equal_the_dense_conv3d_gradients(kernel_size, keep_columns, monkeypatch):
    """The training path's backward (the mirrored kernel over the same table, no scatter; the forward's columns
    kept or gathered again) gives the dense conv's gradients for the input at the active voxels, the weight and
    the bias."""
    monkeypatch.setattr("pixal3d.sparse.KEEP_COLUMNS", keep_columns)
    x, grid = random_sparse(batch=2, resolution=7, channels=4, fill=0.4, seed=3)
    conv = SparseConv3d(4, 3, kernel_size=kernel_size)
    feats = x.feats.clone().requires_grad_(True)
    out = torch.randn(x.feats.shape[0], 3, generator=torch.Generator().manual_seed(1))
    (conv(x.replace(feats=feats)).feats * out).sum().backward()
    dense_in = grid.clone().requires_grad_(True)
    weight = conv.weight.detach().clone().requires_grad_(True)
    bias = conv.bias.detach().clone().requires_grad_(True)
    y = F.conv3d(dense_in, weight, bias, padding=kernel_size // 2)
    c = x.coords.long()
    (y.permute(0, 2, 3, 4, 1)[c[:, 0], c[:, 1], c[:, 2], c[:, 3]] * out).sum().backward()
    assert torch.allclose(feats.grad, dense_in.grad.permute(0, 2, 3, 4, 1)[c[:, 0], c[:, 1], c[:, 2], c[:, 3]],
                          atol=1e-5)
    assert torch.allclose(conv.weight.grad, weight.grad, atol=1e-4)
    assert torch.allclose(conv.bias.grad, bias.grad, atol=1e-4)


def test_sparse_conv_training_path_runs_in_the_autocast_dtype():
    x, _ = random_sparse(channels=4)
    conv = SparseConv3d(4, 2)
    feats = x.feats.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x.replace(feats=feats)).feats
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert feats.grad.dtype == torch.float32 and conv.weight.grad.dtype == torch.float32
    with torch.no_grad():
        reference = conv(x).feats
    assert torch.allclose(y.float(), reference, atol=0.05)


def test_replace_checks_the_row_count():
    x, _ = random_sparse()
    with pytest.raises(ValueError, match="feats must be"):
        x.replace(feats=torch.zeros(x.coords.shape[0] + 1, 2))
