"""mnistlab: autoencoders, denoising, encoder probes, latent-space exploration and GANs on MNIST-like
digits, reproducible from one command."""

__version__ = "0.1.0"
