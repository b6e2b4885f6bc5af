"""Mesh and partitioning, optimizers, objectives, GradCache, checkpoints, input pipeline and the train loop."""
