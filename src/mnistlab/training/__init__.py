"""Training: one generic loop (`loop.fit`), checkpoints, and the per-model steps plugged into it."""
