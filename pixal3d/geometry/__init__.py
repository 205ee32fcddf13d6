"""Asset geometry: sparse PBR voxels, mesh conversion, clean-up, texture bake and GLB export."""
