"""Training and evaluation: the training loop, validation, tiled prediction, boundary F-score, evaluation."""
