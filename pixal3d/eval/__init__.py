"""Evaluation: metrics as pure functions (`pixal3d.eval.metrics`) and the `pixal3d eval` report."""
