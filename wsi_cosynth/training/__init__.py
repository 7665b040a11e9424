"""Training: the tile dataset, the training loop and checkpoints."""
