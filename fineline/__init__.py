"""fineline: LLaMA pretraining on JAX with downstream evaluation at every checkpoint."""

__version__ = "0.1.0"
