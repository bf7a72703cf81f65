"""DSANet in JAX/Flax NNX: video-level action recognition with dynamic segment aggregation."""

__version__ = "0.1.0"
