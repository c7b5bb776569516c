"""ReconKLRatio: a ratio of float64 sums, never a mean of per-batch ratios."""

from __future__ import annotations

import math

import pytest
import torch

from vaekit.metrics import ReconKLRatio


def test_ratio_of_sums_not_mean_of_ratios() -> None:
    batches = [
        (torch.tensor([10.0, 30.0]), torch.tensor([1.0, 3.0])),
        (torch.tensor([5.0]), torch.tensor([5.0])),
    ]
    metric = ReconKLRatio()
    per_batch = [metric(recon, kl).item() for recon, kl in batches]
    assert per_batch == [10.0, 1.0]
    assert metric.compute().item() == 45.0 / 9.0  # not (10 + 1) / 2


def test_per_batch_scalars_and_per_sample_vectors_agree() -> None:
    g = torch.Generator().manual_seed(0)
    recon, kl = torch.rand(4, 8, generator=g) * 50, torch.rand(4, 8, generator=g)
    vectors, scalars = ReconKLRatio(), ReconKLRatio()
    for r, k in zip(recon, kl, strict=True):
        vectors.update(r, k)
        scalars.update(r.sum(), k.sum())
    reference = recon.double().sum() / kl.double().sum()
    torch.testing.assert_close(vectors.compute(), reference.float(), rtol=0, atol=0)
    torch.testing.assert_close(scalars.compute(), reference.float(), rtol=1e-6, atol=0)
    vectors.set_dtype(torch.float64)  # the float64 ratio of the float64 sums
    torch.testing.assert_close(vectors.compute(), reference, rtol=1e-12, atol=0)


def test_zero_kl_sum_is_inf() -> None:
    metric = ReconKLRatio()
    metric.update(torch.tensor([3.0, 4.0]), torch.zeros(2))
    assert metric.compute().item() == math.inf


def test_float64_sums_keep_small_terms() -> None:
    # 1e8 + 1 is exact in float64 and lost in float32.
    metric = ReconKLRatio()
    metric.update(torch.tensor(1e8), torch.tensor(1.0))
    metric.update(torch.tensor(1.0), torch.tensor(1.0))
    assert metric.recon_sum.item() == 1e8 + 1
    assert metric.compute().dtype == torch.float32
    assert metric.compute().item() == torch.tensor((1e8 + 1) / 2).item()  # rounded once
    assert metric.set_dtype(torch.float64).compute().item() == (1e8 + 1) / 2


def test_update_errors() -> None:
    metric = ReconKLRatio()
    msg = r"Argument recon should be a torch\.Tensor, but given float"
    with pytest.raises(TypeError, match=msg):
        metric.update(1.0, torch.tensor(1.0))
    with pytest.raises(
        TypeError,
        match=r"Argument kl should be a floating-point tensor, but given dtype torch\.int64",
    ):
        metric.update(torch.tensor(1.0), torch.tensor(1))
    with pytest.raises(
        ValueError,
        match=r"Arguments recon and kl should have the same shape, "
        r"but given recon.shape=\(4,\) and kl.shape=\(\)",
    ):
        metric.update(torch.ones(4), torch.tensor(1.0))


@pytest.mark.parametrize("call", ["update", "forward"])
def test_inputs_on_another_device_are_refused_and_keep_the_sums(call: str) -> None:
    metric = ReconKLRatio()
    metric.update(torch.tensor([6.0]), torch.tensor([2.0]))
    feed = metric.update if call == "update" else metric
    meta = torch.ones(3, device="meta")
    with pytest.raises(
        ValueError,
        match=r"^Argument recon should be on the metric's device cpu, "
        r"but given a tensor on meta$",
    ):
        feed(meta, meta)
    with pytest.raises(
        ValueError,
        match=r"^Argument kl should be on the metric's device cpu, but given a tensor on meta$",
    ):
        feed(torch.ones(3), meta)
    assert metric.compute().item() == 3.0  # not NaN, and nothing lost


def test_torchmetrics_keywords_reach_the_base_class() -> None:
    assert ReconKLRatio(compute_with_cache=False).compute_with_cache is False
    with pytest.raises(ValueError, match="Unexpected keyword arguments: `threshold`"):
        ReconKLRatio(threshold=0.1)
