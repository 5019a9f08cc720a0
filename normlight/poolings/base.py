"""The base of the built-in poolings and the declarations a model reads from any pooling plugin.

A pooling maps the tokens ``(B, T, D)`` of the last block to one vector ``(B, D)`` per sample. Models read
three class (or instance) attributes; a plugin that does not subclass :class:`Pooling` may set them itself:

- ``norm_position``: ``"pre"`` - the model's final norm runs on every token BEFORE pooling (timm's class-token
  readout); ``"post"`` - it runs on the pooled vector AFTER pooling (timm's ``fc_norm`` for ``avg``/``max``);
- ``uses_class_token``: the model prepends a learnable class token (ViT), which the pooling reads;
- ``needs_hidden_states``: ``forward`` also receives ``hidden_states``, the list of every block's output.
"""

from __future__ import annotations

from torch import nn

NORM_POSITIONS = ("pre", "post")


class Pooling(nn.Module):
    """Tokens (B, T, D) -> (B, D); built as ``cls(dim, **options)``. ``norm_position`` overrides the declared choice."""

    norm_position: str = "pre"
    uses_class_token: bool = False
    needs_hidden_states: bool = False

    def __init__(self, dim: int | None = None, norm_position: str | None = None):
        super().__init__()
        self.dim = dim
        if norm_position is not None:
            if norm_position not in NORM_POSITIONS:
                raise ValueError(f"norm_position must be one of {NORM_POSITIONS}, got {norm_position!r}")
            self.norm_position = norm_position

    def extra_repr(self) -> str:
        return f"norm_position={self.norm_position!r}"
