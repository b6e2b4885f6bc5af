"""Training: the trainer (loop and step), state set-up, mesh and partitioning, optimizers, checkpoints."""
