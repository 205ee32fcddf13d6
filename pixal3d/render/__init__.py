"""Pure-PyTorch PBR renderer (DESIGN section 7): RGBA, depth, normals, base colour, metallic, roughness, face id.

`render_mesh(mesh, camera, lighting)` rasterises a `RenderMesh` (from tensors or `mesh_from_trimesh`) seen by a
`pixal3d.camera.Camera`; `random_lighting(generator)` draws the lighting and `sample_view(generator, mesh)` a
training camera aimed so the object's 2D bounding box is centred (DESIGN section 2). CPU and CUDA: the device is
the mesh's. Choices and measurements: docs/rendering.md.
"""

from __future__ import annotations

from pixal3d.render.mesh import Material, RenderMesh, mesh_from_trimesh
from pixal3d.render.raster import Fragments, rasterize
from pixal3d.render.renderer import RenderItem, RenderOutput, render_mesh, render_meshes
from pixal3d.render.shading import Lighting, default_lighting, random_lighting
from pixal3d.render.views import View, aim_camera, aim_depth, sample_view

__all__ = [
    "Fragments",
    "Lighting",
    "Material",
    "RenderItem",
    "RenderMesh",
    "RenderOutput",
    "View",
    "aim_camera",
    "aim_depth",
    "default_lighting",
    "mesh_from_trimesh",
    "random_lighting",
    "rasterize",
    "render_mesh",
    "render_meshes",
    "sample_view",
]
