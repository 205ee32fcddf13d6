"""The data engine (DESIGN section 7): procedural PBR objects, real-mesh ingestion, rendering and training
samples."""
