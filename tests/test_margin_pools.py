"""Pools of exactly N pairs for AMaPO's batch statistics (``--margin_pool_size``): the statistics, the losses and
which batch the configuration picks, by hand. The multi-process equivalences are in test_distributed_training."""

from __future__ import annotations

import math

import pytest
import torch

from amapo.errors import UserError
from amapo.losses import PreferenceInputs, build_loss
from amapo.losses.stats import BatchStats, PoolGather, StepStatistics, batch_stats, standardized_gap
from amapo.train.config import TrainConfig


def test_pools_of_two_by_hand():
    stats = batch_stats(torch.tensor([1.0, 2.0, 3.0, 5.0]), PoolGather(2))
    torch.testing.assert_close(stats.mean, torch.tensor([1.5, 1.5, 4.0, 4.0]))
    torch.testing.assert_close(stats.std, torch.tensor([math.sqrt(0.5)] * 2 + [math.sqrt(2.0)] * 2))
    assert stats.count == 2


def test_a_last_smaller_pool_takes_what_is_left():
    stats = batch_stats(torch.tensor([1.0, 2.0, 3.0, 4.0, 6.0]), PoolGather(3))
    torch.testing.assert_close(stats.mean, torch.tensor([2.0, 2.0, 2.0, 5.0, 5.0]))
    assert stats.count == pytest.approx((3 * 3 + 2 * 2) / 5)
    one = batch_stats(torch.tensor([1.0, 2.0, 3.0, 7.0]), PoolGather(3))  # a one-pair pool has no spread
    assert one.std[-1].item() == 0.0 and one.mean[-1].item() == 7.0


def test_standardized_gap_is_zero_only_in_pools_without_spread():
    stats = BatchStats(mean=torch.tensor([1.0, 1.0, 4.0]), std=torch.tensor([0.0, 0.0, 2.0]), count=2)
    torch.testing.assert_close(standardized_gap(torch.tensor([1.0, 1.0, 1.0]), stats), torch.tensor([0.0, 0.0, 1.5]))


@pytest.mark.parametrize("method", ["amapo", "amapo-released", "amapo-no-znorm", "amapo-no-zero-margin"])
def test_pooled_loss_equals_each_pool_on_its_own(method):
    g = torch.Generator().manual_seed(3)
    lw, ll = torch.randint(2, 30, (6,), generator=g), torch.randint(2, 30, (6,), generator=g)
    chosen, rejected = -torch.rand(6, generator=g) * lw, -torch.rand(6, generator=g) * ll
    pooled = build_loss(method, beta=2.5, gather=PoolGather(3))(PreferenceInputs(chosen, rejected, lw, ll))
    for part in (slice(0, 3), slice(3, 6)):
        alone = build_loss(method, beta=2.5)(PreferenceInputs(chosen[part], rejected[part], lw[part], ll[part]))
        torch.testing.assert_close(pooled.losses[part], alone.losses, rtol=0, atol=0)
        torch.testing.assert_close(pooled.margins[part], alone.margins, rtol=0, atol=0)
    whole = build_loss(method, beta=2.5)(PreferenceInputs(chosen, rejected, lw, ll))
    assert not torch.equal(whole.margins, pooled.margins)  # the pools are what changed it
    assert pooled.metrics()["batch/pairs"] == 3


def test_step_pools_span_micro_batches_in_order():
    step = StepStatistics()
    step.set([torch.tensor([1.0, 2.0]), torch.tensor([3.0, 9.0]), torch.tensor([5.0, 7.0])])
    step.active = True
    gather = PoolGather(3, step)
    first = batch_stats(torch.tensor([1.0, 2.0]), gather)  # pairs 0, 1 of pool {1, 2, 3}
    second = batch_stats(torch.tensor([3.0, 9.0]), gather)  # pair 2 of pool 0, pair 3 of pool {9, 5, 7}
    third = batch_stats(torch.tensor([5.0, 7.0]), gather)
    torch.testing.assert_close(first.mean, torch.tensor([2.0, 2.0]))
    torch.testing.assert_close(second.mean, torch.tensor([2.0, 7.0]))
    torch.testing.assert_close(third.mean, torch.tensor([7.0, 7.0]))
    with pytest.raises(RuntimeError, match="does not match the step"):  # a fourth call: not part of the step
        batch_stats(torch.tensor([1.0]), gather)
    step.active = False  # evaluation: the eval batch itself, cut into pools
    eval_stats = batch_stats(torch.tensor([1.0, 2.0, 3.0, 10.0]), gather)
    torch.testing.assert_close(eval_stats.mean, torch.tensor([2.0, 2.0, 2.0, 10.0]))


def config(*, pool: int, per_device: int = 2, steps: int = 4, **kwargs) -> TrainConfig:
    return TrainConfig(
        output_dir="unused", use_cpu=True, model_name_or_path="builtin:tiny-llama", dataset="builtin:reverse",
        margin_pool_size=pool, per_device_train_batch_size=per_device,
        gradient_accumulation_steps=steps, **kwargs,
    )  # fmt: skip


@pytest.mark.parametrize(
    "pool,expected",
    [(0, ("micro_batch", None)), (1, ("micro_batch", 1)), (2, ("micro_batch", None)), (4, ("optimizer_step", 4)),
     (8, ("optimizer_step", None))],
)  # fmt: skip
def test_the_smallest_batch_holding_whole_pools_is_chosen(pool, expected):
    assert config(pool=pool).margin_pool() == expected  # one process x 2 pairs x 4 accumulation steps


def test_margin_stats_alone_keeps_its_meaning():
    assert config(pool=0, margin_stats="all_ranks").margin_pool() == ("all_ranks", None)
    assert config(pool=0).margin_pool() == ("micro_batch", None)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"pool": 3}, r"--margin_pool_size 3 does not divide the 8 pairs of an optimizer step \(1 process x 2 pairs x "
                      r"4 accumulation steps\); use one of \[1, 2, 4, 8\]"),
        ({"pool": 4, "method": "simpo"}, "method 'simpo' has none"),
        ({"pool": 4, "margin_stats": "all_ranks"}, "give one of them"),
        ({"pool": -2}, "must be >= 1"),
    ],
)  # fmt: skip
def test_pool_sizes_that_cannot_work_are_refused_when_the_config_is_built(kwargs, message):
    with pytest.raises(UserError, match=message):
        config(**kwargs)
