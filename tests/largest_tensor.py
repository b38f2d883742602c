"""``LargestTensor``: the largest tensor any operation returns while the mode is active (forward and backward), the
memory tests' one way to say "no tensor of size B x T x T" or "no [M, V] logits"."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class LargestTensor(TorchDispatchMode):
    """``bytes`` / ``where`` (operation, shape): the largest output by bytes; ``numel`` / ``shape``: by elements."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes, self.where = 0, None
        self.numel, self.shape = 0, None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if not isinstance(tensor, torch.Tensor):
                continue
            if tensor.numel() * tensor.element_size() > self.bytes:
                self.bytes, self.where = tensor.numel() * tensor.element_size(), (func, tuple(tensor.shape))
            if tensor.numel() > self.numel:
                self.numel, self.shape = tensor.numel(), tuple(tensor.shape)
        return out
