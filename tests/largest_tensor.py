"""``LargestTensor``: the largest tensor any operation returns while the mode is active (forward and backward), the
memory tests' one way to say "no tensor of size B x T x T" or "no [M, V] logits"."""

from __future__ import annotations

import weakref

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


class PeakLiveBytes(TorchDispatchMode):
    """``peak``: the most bytes that operations' outputs held at once while the mode was active (each storage
    counted once, from the operation that made it until its tensor is freed; an in-place result adds nothing)."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.now = self.peak = 0

    def _free(self, key: int) -> None:
        self.now -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for tensor in tree_leaves(out):
            if not isinstance(tensor, torch.Tensor):
                continue
            key = tensor.untyped_storage().data_ptr()  # a view or an in-place result shares an input's storage
            if key in inputs or key in self.live or tensor.untyped_storage().nbytes() == 0:
                continue
            self.live[key] = tensor.untyped_storage().nbytes()
            self.now += self.live[key]
            self.peak = max(self.peak, self.now)
            weakref.finalize(tensor, self._free, key)
        return out
