"""Common interface of every classifier in the project."""

from __future__ import annotations

from torch import Tensor, nn


class PaperModel(nn.Module):
    """A classifier split into ``body`` (input -> final hidden layer) and ``head`` (-> logits).

    Subclasses set ``self.body`` and ``self.head``; architectures with named intermediate layers
    override :meth:`hidden` to add them.
    """

    body: nn.Module
    head: nn.Module

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))

    def hidden(self, x: Tensor) -> dict[str, Tensor]:
        """Named hidden activations plus ``logits`` for ``x``."""
        final_hidden = self.body(x)
        return {"final_hidden": final_hidden, "logits": self.head(final_hidden)}

    def dropout_layers(self) -> list[nn.Dropout]:
        """The dropout layers (Feinman et al.'s uncertainty reads them; cw2017 §6.1)."""
        return [m for m in self.modules() if isinstance(m, nn.Dropout)]
