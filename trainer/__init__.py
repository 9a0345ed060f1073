"""The STCA model and its baselines, training with exact resume, metrics, evaluation and
scoring; data comes in through longseq.reader."""
