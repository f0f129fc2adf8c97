"""Where the visual and the text tokens sit inside one self-attention call.

Every adapter produces a `TokenLayout` for each attention call, and every method reads it: the latent
token grid (after patchify) and the span of text tokens that joint-attention models (Flux, HunyuanVideo,
CogVideoX, SD3, Mochi, QwenImage) concatenate with the visual tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TextPosition = Literal["none", "first", "last"]


@dataclass(frozen=True)
class TokenLayout:
    """Token layout of one self-attention call.

    grid: (T, H, W) of the visual tokens in raster order t, h, w (images have T == 1).
    text_len: number of text tokens concatenated with the visual tokens (0 for video-only self-attention).
    text_position: "first" (text, then visual), "last" (visual, then text) or "none".
    """

    grid: tuple[int, int, int]
    text_len: int = 0
    text_position: TextPosition = "none"

    def __post_init__(self) -> None:
        if len(self.grid) != 3 or any(int(g) < 1 for g in self.grid):
            raise ValueError(f"TokenLayout.grid must be three positive ints (T, H, W), got {self.grid!r}")
        if self.text_position not in ("none", "first", "last"):
            raise ValueError(f"TokenLayout.text_position must be 'none', 'first' or 'last', got {self.text_position!r}")
        if self.text_len < 0:
            raise ValueError(f"TokenLayout.text_len must be >= 0, got {self.text_len}")
        if self.text_len > 0 and self.text_position == "none":
            raise ValueError("TokenLayout: text_len > 0 needs text_position 'first' or 'last'")

    @property
    def num_visual(self) -> int:
        t, h, w = self.grid
        return t * h * w

    @property
    def seq_len(self) -> int:
        return self.num_visual + self.text_len

    @property
    def visual_slice(self) -> slice:
        start = self.text_len if self.text_position == "first" else 0
        return slice(start, start + self.num_visual)

    @property
    def text_slice(self) -> slice:
        if self.text_position == "first":
            return slice(0, self.text_len)
        if self.text_position == "last":
            return slice(self.num_visual, self.num_visual + self.text_len)
        return slice(0, 0)

    def with_seq_len(self, seq_len: int) -> "TokenLayout":
        """The layout for a call of `seq_len` tokens: the tokens beyond the grid are text.

        Models such as Mochi drop padded text per sample, so the text length is only known per call.
        """
        text_len = seq_len - self.num_visual
        if text_len < 0:
            raise ValueError(
                f"attention call has {seq_len} tokens, fewer than the {self.num_visual} visual tokens of grid {self.grid}"
            )
        if text_len == self.text_len:
            return self
        position = self.text_position if text_len else "none"
        if text_len and position == "none":
            raise ValueError(
                f"attention call has {text_len} tokens beyond the visual grid {self.grid} but the model's layout "
                "declares no text tokens in self-attention"
            )
        return TokenLayout(self.grid, text_len, position)
