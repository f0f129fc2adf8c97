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

    @classmethod
    def for_call(cls, grid: tuple[int, int, int], seq_len: int, text_position: TextPosition) -> "TokenLayout":
        """The layout of an attention call of `seq_len` tokens: the tokens beyond the grid are text.

        The text length is read per call because models such as Mochi drop padded text per sample.
        """
        num_visual = grid[0] * grid[1] * grid[2]
        text_len = seq_len - num_visual
        if text_len < 0:
            raise ValueError(f"attention call has {seq_len} tokens, fewer than the {num_visual} visual tokens of grid {grid}")
        if text_len and text_position == "none":
            raise ValueError(
                f"attention call has {text_len} tokens beyond the visual grid {grid}, but this layer is declared "
                "visual-only self-attention"
            )
        return cls(tuple(grid), text_len, text_position if text_len else "none")
