"""swiftdit: efficient attention for diffusers Diffusion Transformers.

    import swiftdit                                  # adds the two methods below to every DiffusionPipeline
    report = pipe.enable_efficient_attention("radial", dense_steps=10)
    frames = pipe(prompt).frames[0]
    pipe.disable_efficient_attention()               # the untouched model again
"""

from .api import (
    EnableReport,
    attention_session,
    disable_efficient_attention,
    enable_efficient_attention,
)
from .methods import available_methods

__version__ = "0.1.0"


def _attach_to_diffusers() -> None:
    """Give every DiffusionPipeline `enable_efficient_attention` / `disable_efficient_attention`.

    diffusers has no plugin entry points; class attributes are found before ConfigMixin's __getattr__.
    """
    from diffusers import DiffusionPipeline

    def enable(self, method: str = "radial", **options) -> EnableReport:
        return enable_efficient_attention(self, method, **options)

    def disable(self) -> None:
        disable_efficient_attention(self)

    enable.__doc__ = enable_efficient_attention.__doc__
    disable.__doc__ = disable_efficient_attention.__doc__
    DiffusionPipeline.enable_efficient_attention = enable
    DiffusionPipeline.disable_efficient_attention = disable


_attach_to_diffusers()

__all__ = [
    "EnableReport",
    "attention_session",
    "available_methods",
    "disable_efficient_attention",
    "enable_efficient_attention",
]
