"""swiftdit: efficient attention for diffusers Diffusion Transformers."""

__version__ = "0.1.0"
