"""mnistlab: autoencoders, VAEs, denoising, encoder probes, latent-space exploration and GANs on
MNIST-like digits, reproducible from one command. `mnistlab.load_run(path)` and `mnistlab.train(task,
...)` are the Python API (mnistlab/api.py); they are imported on first use, so `import mnistlab` stays
light."""

__version__ = "0.1.0"


def __getattr__(name: str):
    if name in ("load_run", "train", "all_tasks", "with_role", "TrainedRun"):
        from mnistlab import api

        return getattr(api, name)
    raise AttributeError(f"module 'mnistlab' has no attribute {name!r}")
