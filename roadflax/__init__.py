"""roadflax: road-surface classifiers from an AlexNet-style autoencoder, in JAX/Flax."""

__version__ = "0.1.0"
