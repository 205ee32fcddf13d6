"""Training: the one loop (`loop.train`), its config, objectives, checkpoints and a synthetic data source."""
