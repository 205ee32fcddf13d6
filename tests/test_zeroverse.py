"""Zeroverse-style procedural families and family sets: classic seeds unchanged, determinism, bounds, height
fields that displace, cutters that remove volume, thin-but-not-too-thin wires, the sample path, the CLI and
training options.

Sizes: samples at S = 64, R_hr = 64, coarse 16 (as in tests/test_samples.py); wire seeds cover every layout kind
(helix 0, rings 1, cage 4, curves 11, lattice 21).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import trimesh

from pixal3d.cli import main
from pixal3d.data import procedural
from pixal3d.data.dataset import ProceduralStream, ShardDataset
from pixal3d.data.procedural import FAMILIES, FAMILY_SETS, generate, procedural_asset_id
from pixal3d.data.procedural import parts as P
from pixal3d.data.procedural import zeroverse as Z
from pixal3d.data.samples import make_sample, view_generator
from pixal3d.data.units import SampleOptions, load_source, procedural_units
from pixal3d.errors import InputError
from pixal3d.training.config import DataConfig
from pixal3d.training.data import ProceduralSource

NEW = tuple(Z.ZEROVERSE_FAMILIES)
WIRE_SEEDS = (0, 1, 4, 11, 21)

# sha256 (first 32 hex digits) of every part's name, vertices, faces, UVs, raw texture pixels and PBR factors,
# computed on main before the family sets existed (commit 2320edf): the one pinned value, it guards the
# classic seed -> object mapping that past evaluations (held-out seeds 1,000,000 on) rely on.
CLASSIC_HASHES = {
    0: ("chair", "82aeb6fd07964e7286f17347a005da9c"),
    1: ("table", "a0fc2d05882e04e3d25f9e60828f4957"),
    18: ("potted_plant", "0a3d8ffb53496cfedba35110b3592d16"),
    19: ("chair", "6948e9693bf9bd1d04c6a13e26b3ae1e"),
    1_000_000: ("airplane", "c75dc3c2785fa1b8ba21e2a8a0427b4a"),
    1_000_007: ("potted_plant", "3f2371f7970b1547506ee6994163f957"),
}


def _content_hash(scene: trimesh.Scene) -> str:
    h = hashlib.sha256()
    for name, mesh in scene.geometry.items():
        h.update(name.encode())
        for a in (mesh.vertices, mesh.faces, mesh.visual.uv):
            h.update(np.ascontiguousarray(a).tobytes())
        mat = mesh.visual.material
        for tex in (mat.baseColorTexture, mat.metallicRoughnessTexture):
            h.update(b"none" if tex is None else tex.tobytes())
        h.update(repr((mat.metallicFactor, mat.roughnessFactor)).encode())
    return h.hexdigest()[:32]


def _rng(seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(seed))


def _winding(mesh_vertices: np.ndarray, faces: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Generalised winding number [N] of closed triangle meshes at `points` [N, 3]: 1 inside, 0 outside."""
    tri = mesh_vertices[faces][None] - points[:, None, None]  # (N, F, 3, 3)
    a, b, c = tri[..., 0, :], tri[..., 1, :], tri[..., 2, :]
    la, lb, lc = (np.linalg.norm(x, axis=-1) for x in (a, b, c))
    num = np.einsum("nfi,nfi->nf", a, np.cross(b, c))
    den = la * lb * lc + np.einsum("nfi,nfi->nf", a, b) * lc + np.einsum("nfi,nfi->nf", b, c) * la \
        + np.einsum("nfi,nfi->nf", c, a) * lb
    return 2 * np.arctan2(num, den).sum(1) / (4 * np.pi)


def _thickness(mesh: trimesh.Trimesh) -> np.ndarray:
    """Per face: distance from its centroid along the inward normal to the next surface of `mesh` (Moller-Trumbore
    against all its triangles); inf where the ray escapes."""
    tri = mesh.triangles
    origin, direction = tri.mean(1), -mesh.face_normals
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    p = np.cross(direction[:, None], e2[None])  # (R, F, 3)
    det = np.einsum("fi,rfi->rf", e1, p)
    ok = np.abs(det) > 1e-14
    inv = np.where(ok, 1 / np.where(ok, det, 1), 0)
    s = origin[:, None] - tri[None, :, 0]
    u = np.einsum("rfi,rfi->rf", s, p) * inv
    q = np.cross(s, e1[None])
    v = np.einsum("ri,rfi->rf", direction, q) * inv
    t = np.einsum("fi,rfi->rf", e2, q) * inv
    hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 1e-7)
    return np.where(hit, t, np.inf).min(1)


# ------------------------------------------------------------------------------------------- family sets
def test_classic_seeds_generate_what_they_always_did() -> None:
    for seed, (family, digest) in CLASSIC_HASHES.items():
        obj = generate(seed)
        assert (obj.family, _content_hash(obj.scene)) == (family, digest), seed
    assert _content_hash(generate(19, family_set="classic").scene) == CLASSIC_HASHES[19][1]


def test_family_sets_keep_classic_first_and_add_the_new_families() -> None:
    assert len(FAMILIES) == 19 and FAMILY_SETS["classic"] == tuple(FAMILIES)
    assert FAMILY_SETS["zeroverse"] == NEW == ("primitive_stack", "cut_block", "wireframe")
    assert FAMILY_SETS["all"] == tuple(FAMILIES) + NEW
    assert [generate(s, family_set="all").family for s in (0, 19, 20, 21, 22)] == \
        ["chair", "primitive_stack", "cut_block", "wireframe", "chair"]
    assert procedural_asset_id(12) == "proc-00000012" and procedural_asset_id(12, "all") == "proc-all-00000012"
    assert Z.EXTENT == procedural.EXTENT


def test_bad_family_set_raises_one_clear_error(tmp_path) -> None:
    for call in (lambda: generate(0, family_set="zero"), lambda: procedural_units(2, 1, family_set="zero"),
                 lambda: ProceduralStream(family_set="zero")):
        with pytest.raises(InputError, match="classic, zeroverse, all"):
            call()
    with pytest.raises(InputError, match='"families" must be one of classic, zeroverse, all'):
        DataConfig(kind="procedural", families="everything")
    with pytest.raises(InputError, match='kind "procedural" only'):
        DataConfig(kind="synthetic", families="all")
    assert DataConfig(kind="procedural", families="all").families == "all"
    out = tmp_path / "data"
    assert main(["data", "generate", "--procedural", "1", "--views", "1", "-o", str(out), "--families", "zero"]) == 2
    assert not out.exists()


# ------------------------------------------------------------------------------------------- the families
@pytest.fixture(scope="module")
def scenes() -> dict[tuple[str, int], trimesh.Scene]:
    return {(f, s): generate(s, family=f).scene for f in NEW for s in (0, 1, 2)}


def test_new_families_are_deterministic_inside_the_cube_with_uvs_and_materials(scenes) -> None:
    materials = set()
    for (family, seed), scene in scenes.items():
        again = generate(seed, family=family).scene
        assert list(again.geometry) == list(scene.geometry), (family, seed)
        for name, mesh in scene.geometry.items():
            other = again.geometry[name]
            for a, b in ((mesh.vertices, other.vertices), (mesh.faces, other.faces), (mesh.visual.uv, other.visual.uv)):
                assert np.array_equal(a, b), (family, seed, name)
            uv = mesh.visual.uv
            assert len(mesh.faces) > 0 and uv.shape == (len(mesh.vertices), 2), (family, seed, name)
            assert np.isfinite(uv).all() and uv.min() >= -1e-9 and uv.max() <= 1 + 1e-9, (family, seed, name)
            assert isinstance(mesh.visual.material, trimesh.visual.material.PBRMaterial)
            materials.add(mesh.visual.material.name)
        lo, hi = scene.bounds
        assert np.all(lo >= -0.5) and np.all(hi <= 0.5) and np.isclose((hi - lo).max(), 0.95), (family, seed)
    assert len(materials) >= 5
    assert _content_hash(generate(3, family="cut_block").scene) != _content_hash(generate(4, family="cut_block").scene)


def test_height_fields_displace_the_faces_and_keep_the_box_closed() -> None:
    g = Z.displaced_box((1.0, 0.8, 0.6), _rng(0), amplitude=0.06)
    on_box = np.abs(g.vertices / [0.5, 0.4, 0.3]).max(1)  # 1 on the undisplaced box
    off = np.abs(on_box - 1)
    assert off.max() > 0.05 and (off > 0.01).mean() > 0.3
    closed = trimesh.Trimesh(*Z.weld(g), process=False)
    assert closed.is_watertight and closed.volume > 0
    for kind in ("cylinder", "cone", "sphere", "torus"):
        g = Z.displaced_primitive(kind, 1.0, _rng(1), amplitude=0.1)
        flat = Z.displaced_primitive(kind, 1.0, _rng(1), amplitude=0.0)  # same draws, no displacement
        off = np.linalg.norm(g.vertices - flat.vertices, axis=1)
        assert off.max() > 0.02 and (off > 1e-3).mean() > 0.3, kind
        closed = trimesh.Trimesh(*Z.weld(g), process=False)
        assert closed.is_watertight and closed.volume > 0, kind


def test_stacked_primitives_touch_or_overlap() -> None:
    for seed in range(4):
        parts = Z.primitive_stack(_rng(seed))
        assert 2 <= len(parts) <= 6
        boxes = [(p.geom.vertices.min(0), p.geom.vertices.max(0)) for p in parts]
        for i, (lo, hi) in enumerate(boxes[1:], 1):
            assert any(np.all(lo <= h) and np.all(low <= hi) for low, h in boxes[:i]), (seed, i)


def test_cutters_remove_volume() -> None:
    block = Z.solid(P.box((1.0, 1.0, 1.0)))
    hole = Z.solid(P.translate(Z.cylinder_geom(0.2, 2.0), (0, -1.0, 0)))
    cut = block - hole
    g = Z.to_geom(cut)
    area = 0.5 * 40 * 0.2**2 * np.sin(2 * np.pi / 40)  # the 40-gon's area
    assert cut.volume() == pytest.approx(1.0 - area, abs=1e-9)
    inside = _winding(g.vertices, g.faces, np.array([[0.0, 0.0, 0.0], [0.0, 0.45, 0.0], [0.4, 0.0, 0.4]]))
    assert np.allclose(inside, [0, 0, 1], atol=1e-6)  # the hole's axis is outside, the wall inside
    for seed in range(6):
        shape, cutters, _ = Z.block_and_cutters(_rng(seed))
        cut = shape
        for c in cutters:
            cut = cut - c
        assert cut.volume() < 0.995 * shape.volume(), seed


def test_wires_are_thin_but_at_least_the_minimum_radius() -> None:
    for seed in WIRE_SEEDS:
        scene = generate(seed, family="wireframe").scene
        wires = [m for name, m in scene.geometry.items() if "wire" in name]
        merged = trimesh.Trimesh(np.concatenate([m.vertices for m in wires]), np.concatenate(
            [m.faces + o for m, o in zip(wires, np.cumsum([0] + [len(m.vertices) for m in wires[:-1]]), strict=True)]))
        pieces = merged.split(only_watertight=False)  # each tube, rod, ring or ball
        assert all(p.is_watertight for p in pieces), seed
        volume = sum(p.volume for p in pieces)
        assert volume < 0.05 * np.prod(merged.extents), seed
        # Half the distance across each piece: >= WIRE_RADIUS_MIN x cos(15 deg) (the 12-gon's apothem) nearly
        # everywhere (the 5th percentile: a curve that crosses itself meets its own surface inside).
        for piece in pieces:
            half = np.percentile(_thickness(piece), 5) / 2
            assert half >= 0.006, (seed, half)


# ------------------------------------------------------------------------------------------- data path
def test_the_all_set_goes_through_the_sample_path() -> None:
    units = procedural_units(3, 1, seed_offset=20, family_set="all")
    assert [u.source for u in units] == ["procedural:all:20", "procedural:all:21", "procedural:all:22"]
    assert [u.asset_id for u in units] == ["proc-all-00000020", "proc-all-00000021", "proc-all-00000022"]
    assert procedural_units(1, 1, seed_offset=20)[0].source == "procedural:20"  # classic units as before
    scene = load_source(units[0].source)
    assert _content_hash(scene) == _content_hash(generate(20, family="cut_block").scene)
    sample = make_sample(scene, view_generator(units[0].asset_id, 0), 64, 64, 16, asset_id=units[0].asset_id)
    assert len(sample.voxels) > 50 and sample.coarse.shape[0] > 0 and sample.image[..., 3].max() == 255


def test_stream_takes_the_family_set_and_resumes_only_with_it() -> None:
    options = SampleOptions(image_size=64, resolution=64, coarse=16)
    stream = ProceduralStream(options, views=1, seed_offset=21, limit=1, family_set="all")
    sample = next(iter(stream))
    assert sample.sample_id == "proc-all-00000021/0" and len(sample.voxels) > 0  # a wireframe
    state = stream.state_dict()
    assert state["family_set"] == "all"
    with pytest.raises(InputError, match="family_set"):
        ProceduralStream(options, views=1, seed_offset=21).load_state_dict(state)
    old = {k: v for k, v in ProceduralStream(options, views=1).state_dict().items() if k != "family_set"}
    ProceduralStream(options, views=1).load_state_dict(old)  # a checkpoint from before family sets: classic
    with pytest.raises(InputError, match="family_set"):
        ProceduralStream(options, views=1, family_set="all").load_state_dict(old)
    source = ProceduralSource(DataConfig(kind="procedural", image_size=64, resolution=64, coarse_resolution=16,
                                         families="all"), batch_size=1)
    assert source.stream.family_set == "all" and source.state_dict()["family_set"] == "all"


def test_cli_generates_shards_of_a_family_set(tmp_path) -> None:
    out = tmp_path / "data"
    args = ["data", "generate", "--procedural", "1", "--views", "1", "--seed-offset", "21", "--families", "all",
            "--size", "32", "--resolution", "64", "--coarse", "16", "-o", str(out)]
    assert main(args) == 0
    dataset = ShardDataset(out)
    assert [dataset.sample_id(i) for i in range(len(dataset))] == ["proc-all-00000021/0"]
    assert main(args) == 0 and len(ShardDataset(out)) == 1  # resumed: already done
    glb = tmp_path / "wire.glb"
    assert main(["data", "procedural", "--seed", "21", "--families", "all", "-o", str(glb)]) == 0
    assert len(trimesh.load(glb, force="scene").geometry) == len(generate(21, family="wireframe").scene.geometry)
