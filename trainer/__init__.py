"""Reader -> request batches, the STCA model and baselines, training, metrics, checkpoints, scoring."""
