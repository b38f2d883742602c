"""The chunked LM head works in one [tokens, vocab] buffer per chunk, forward and backward: its log-softmax and
gradient are computed in place in the chunk's logits (``amapo.model.lm_head``), not in two more buffers."""

import pytest
import torch
from largest_tensor import PeakLiveBytes

from amapo.model.lm_head import ChunkedTokenLogps, LogitTransform


@pytest.mark.parametrize("transform", [LogitTransform(), LogitTransform(scale=0.5, softcap=30.0)])
def test_a_chunk_holds_one_logits_buffer(transform):
    tokens, hidden_size, vocab, chunk = 96, 16, 5000, 32
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(tokens, hidden_size, generator=generator, requires_grad=True)
    weight = torch.randn(vocab, hidden_size, generator=generator, requires_grad=True)
    targets = torch.randint(0, vocab, (tokens,), generator=generator)
    chunk_bytes = chunk * vocab * 4
    with PeakLiveBytes() as forward:
        logps = ChunkedTokenLogps.apply(hidden, weight, None, targets, chunk, transform, False)
    with PeakLiveBytes() as backward:
        logps.sum().backward()
    extra = 1 if transform.softcap else 0  # soft-capping makes z beside the raw logits
    assert forward.peak <= (1.1 + extra) * chunk_bytes, forward.peak / chunk_bytes
    # backward also holds the weight's gradient (vocab x hidden, in fp32, plus its chunk's term)
    weight_grads = 2 * weight.numel() * 4
    assert backward.peak <= (1.1 + extra) * chunk_bytes + weight_grads, (backward.peak - weight_grads) / chunk_bytes
    want = torch.log_softmax(transform(hidden.detach() @ weight.detach().t()), -1).gather(-1, targets[:, None])
    torch.testing.assert_close(logps.detach(), want.squeeze(-1))
