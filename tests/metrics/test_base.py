"""What all vaekit metrics share: exact accumulation, forward, merge_state, pickling, state_dict.

Every metric runs against a plain float64 reference on the concatenated data.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass

import matplotlib
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor
from torch.distributions import Normal, kl_divergence

from tests.metrics._threads import ThreadWorld
from vaekit.functional.monitors import (
    _active_units_variance,
    _kl_per_dimension_compute,
    _recon_kl_ratio_compute,
)
from vaekit.metrics import ActiveUnits, KLPerDimension, ReconKLRatio
from vaekit.metrics._base import _agree_latent_shape, _SumStateMetric

matplotlib.use("Agg")

Batch = tuple[Tensor, ...]
SCALES = torch.tensor([0.0, 0.05, 1.0, 3.0])  # active-unit variances 0, 0.0025, 1, 9


@dataclass(frozen=True)
class Case:
    make: Callable[[], _SumStateMetric]
    data: Callable[[int, int], Batch]  # (n, seed) -> update arguments
    observe: Callable[[_SumStateMetric], Tensor]  # the float64 quantity compute() rests on
    reference: Callable[[Batch], Tensor]  # the same quantity from the concatenated data
    rtol: float = 1e-9  # against the reference; KL elements are float32 for float32 inputs


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _ratio_data(n: int, seed: int) -> Batch:
    g = _gen(seed)
    return torch.rand(n, generator=g) * 100, torch.rand(n, generator=g) * 3


def _au_data(n: int, seed: int) -> Batch:
    return (100.0 + torch.randn(n, 4, generator=_gen(seed)) * SCALES,)


def _kl_data(n: int, seed: int) -> Batch:
    g = _gen(seed)
    return torch.randn(n, 2, 3, generator=g), torch.randn(n, 2, 3, generator=g)


def _au_observe(m: _SumStateMetric) -> Tensor:
    assert isinstance(m, ActiveUnits)
    return _active_units_variance(m.sum_mu, m.sum_mu_sq, m.total)


def _kl_reference(b: Batch) -> Tensor:
    q = Normal(b[0].double(), (0.5 * b[1].double()).exp())
    return kl_divergence(q, Normal(0.0, 1.0)).mean(dim=0)


CASES = {
    "ReconKLRatio": Case(
        ReconKLRatio,
        _ratio_data,
        lambda m: _recon_kl_ratio_compute(m.recon_sum, m.kl_sum),
        lambda b: b[0].double().sum() / b[1].double().sum(),
    ),
    "ActiveUnits": Case(
        ActiveUnits, _au_data, _au_observe, lambda b: b[0].double().var(dim=0, correction=0)
    ),
    "KLPerDimension": Case(
        KLPerDimension,
        _kl_data,
        lambda m: _kl_per_dimension_compute(m.kl_sum, m.total),
        _kl_reference,
        rtol=1e-5,
    ),
}


def _cat(batches: list[Batch]) -> Batch:
    return tuple(torch.cat(parts) for parts in zip(*batches, strict=True))


def _close(actual: Tensor, expected: Tensor, rtol: float = 1e-9) -> None:
    torch.testing.assert_close(actual, expected.to(actual.dtype), rtol=rtol, atol=1e-12 + rtol)


@pytest.fixture(params=list(CASES))
def case(request: pytest.FixtureRequest) -> Case:
    return CASES[request.param]


@pytest.mark.parametrize("name", list(CASES))
@given(sizes=st.lists(st.integers(0, 9), min_size=1, max_size=5), seed=st.integers(0, 2**16))
def test_batches_equal_one_update_on_concatenated_data(
    name: str, sizes: list[int], seed: int
) -> None:
    case = CASES[name]
    sizes[0] += 1  # at least one sample
    batches = [case.data(n, seed + i) for i, n in enumerate(sizes)]
    split, whole = case.make(), case.make()
    for batch in batches:
        split.update(*batch)
    whole.update(*_cat(batches))
    _close(case.observe(split), case.reference(_cat(batches)), case.rtol)
    _close(case.observe(split), case.observe(whole))
    if name == "ActiveUnits":
        assert split.compute().item() == (case.reference(_cat(batches)) > 0.01).sum().item()


def test_forward_returns_the_batch_value_and_accumulates(case: Case) -> None:
    a, b = case.data(6, 0), case.data(4, 1)
    metric, batch_only = case.make(), case.make()
    metric(*a)
    batch_value = metric(*b)
    batch_only.update(*b)
    torch.testing.assert_close(batch_value, batch_only.compute())
    _close(case.observe(metric), case.reference(_cat([a, b])), case.rtol)
    assert metric.update_count == 2


def test_merge_state_refreshes_the_cached_result(case: Case) -> None:
    # torchmetrics 1.9.0 keeps the result cached by compute() after merge_state: this fails
    # without the guard in _SumStateMetric.merge_state.
    a, b = case.data(5, 0), case.data(7, 1)
    left, right = case.make(), case.make()
    left.update(*a)
    right.update(*b)
    before = left.compute()
    left.merge_state(right)
    after = left.compute()
    _close(case.observe(left), case.reference(_cat([a, b])), case.rtol)
    if case.make is not ActiveUnits:  # a count can legitimately stay the same
        assert not torch.equal(before, after)
    torch.testing.assert_close(after, left.compute())


@pytest.mark.parametrize("as_dict", [False, True])
def test_merge_into_a_fresh_metric(case: Case, as_dict: bool) -> None:
    a, b = case.data(5, 2), case.data(3, 3)
    left, right, fresh = case.make(), case.make(), case.make()
    left.update(*a)
    right.update(*b)
    fresh.merge_state(left.metric_state if as_dict else left)  # no "compute before update"
    fresh.merge_state(right.metric_state if as_dict else right)
    _close(case.observe(fresh), case.reference(_cat([a, b])), case.rtol)
    assert fresh.update_count == 2


def test_merge_state_rejects_another_metric_class(case: Case) -> None:
    other = ReconKLRatio() if case.make is not ReconKLRatio else KLPerDimension()
    with pytest.raises(ValueError, match="Expected incoming state to be an instance of"):
        case.make().merge_state(other)


def test_pickle_and_clone_keep_the_state(case: Case) -> None:
    a, b = case.data(5, 4), case.data(3, 5)
    metric = case.make()
    metric.update(*a)
    for copy in (pickle.loads(pickle.dumps(metric)), metric.clone()):
        copy.update(*b)
        _close(case.observe(copy), case.reference(_cat([a, b])), case.rtol)
    _close(case.observe(metric), case.reference(a), case.rtol)


def test_module_state_dict_stays_empty(case: Case) -> None:
    metric = case.make()
    metric.update(*case.data(3, 0))
    assert metric.state_dict() == {}


def test_inputs_are_detached(case: Case) -> None:
    batch = tuple(t.requires_grad_() for t in case.data(4, 0))
    metric = case.make()
    value = metric(*batch)
    assert not value.requires_grad
    assert not any(s.requires_grad for s in metric.metric_state.values())


def _state_dtypes(metric: _SumStateMetric) -> dict[str, torch.dtype]:
    return {name: value.dtype for name, value in metric.metric_state.items()}


REGISTERED = {  # the dtypes the states are registered with: float64 sums, int64 counts
    "ReconKLRatio": {"recon_sum": torch.float64, "kl_sum": torch.float64},
    "ActiveUnits": {
        "total": torch.int64,
        "sum_mu": torch.float64,
        "sum_mu_sq": torch.float64,
        "shift": torch.float64,
    },
    "KLPerDimension": {"kl_sum": torch.float64, "total": torch.int64},
}


@pytest.mark.parametrize("name", list(CASES))
def test_results_come_in_torchmetrics_default_dtype_from_float64_sums(name: str) -> None:
    case = CASES[name]
    batch = case.data(6, 8)
    metric = case.make()
    metric.update(*batch)
    assert _state_dtypes(metric) == REGISTERED[name]
    result = metric.compute()
    if name == "ActiveUnits":
        assert result.dtype == torch.int64
        return
    assert result.dtype == torch.get_default_dtype() == torch.float32
    reference = case.reference(batch).float()  # a float32 reference, compared as it is
    assert torch.allclose(result, reference, rtol=case.rtol, atol=1e-6)
    assert metric(*case.data(3, 9)).dtype == torch.float32  # forward too


CASTS: dict[str, tuple[Callable[[torch.nn.Module], object], torch.dtype]] = {
    # how the metric is cast, and the dtype its floating-point results then take
    "set_dtype(float64)": (lambda m: m.set_dtype(torch.float64), torch.float64),
    "set_dtype(float16)": (lambda m: m.set_dtype(torch.float16), torch.float16),
    "set_dtype(float32)": (lambda m: m.set_dtype(torch.float32), torch.float32),
    ".half()": (lambda m: m.half(), torch.float32),  # torchmetrics ignores these casts
    ".float()": (lambda m: m.float(), torch.float32),
    ".double()": (lambda m: m.double(), torch.float32),
    "parent .half()": (lambda m: torch.nn.ModuleDict({"m": m}).half(), torch.float32),
    "parent .double()": (lambda m: torch.nn.ModuleDict({"m": m}).double(), torch.float32),
    ".to(float16)": (lambda m: m.to(torch.float16), torch.float16),
}


@pytest.mark.parametrize("cast", list(CASTS))
@pytest.mark.parametrize("name", list(CASES))
def test_casts_keep_float64_sums_and_int_counts(name: str, cast: str) -> None:
    case = CASES[name]
    apply, result_dtype = CASTS[cast]
    a, b = case.data(5, 10), case.data(4, 11)
    metric = case.make()
    metric.update(*a)
    before = {k: v.clone() for k, v in metric.metric_state.items()}
    apply(metric)
    assert _state_dtypes(metric) == REGISTERED[name]
    torch.testing.assert_close(metric.metric_state, before, rtol=0, atol=0)  # not a digit lost
    metric.update(*b)  # and the sums go on in float64
    _close(case.observe(metric), case.reference(_cat([a, b])), case.rtol)
    result = metric.compute()
    assert result.dtype == (torch.int64 if name == "ActiveUnits" else result_dtype)
    metric.reset()
    assert _state_dtypes(metric) == REGISTERED[name]


@pytest.mark.parametrize("name", list(CASES))
def test_device_moves_keep_the_state_dtypes(name: str) -> None:
    metric = CASES[name].make()
    metric.update(*CASES[name].data(3, 12))
    metric.to("meta")
    assert {v.device.type for v in metric.metric_state.values()} == {"meta"}
    assert metric.device.type == "meta"
    assert _state_dtypes(metric) == REGISTERED[name]
    metric.reset()
    assert {v.device.type for v in metric.metric_state.values()} == {"meta"}
    assert _state_dtypes(metric) == REGISTERED[name]


class _Listing(_SumStateMetric):
    """A metric with a list state, as a vaekit metric that keeps every sample would have."""

    values: list[Tensor]

    def __init__(self) -> None:
        super().__init__()
        self.add_state("values", default=[], dist_reduce_fx="cat")

    def update(self, x: Tensor) -> None:
        self.values.append(x.double())

    def compute(self) -> Tensor:
        return self._result(torch.cat(self.values).sum())


def test_list_states_keep_their_dtype_and_sync() -> None:
    metric = _Listing()
    metric.update(torch.tensor([1.0, 2.0]))
    metric.update(torch.tensor([4.0]))
    metric.set_dtype(torch.float16)
    assert [v.dtype for v in metric.values] == [torch.float64] * 2
    metric.sync(dist_sync_fn=lambda t, group=None: [t, t], distributed_available=lambda: True)
    assert metric.values.tolist() == [1.0, 2.0, 4.0, 1.0, 2.0, 4.0]  # two equal processes
    metric.unsync()
    assert metric.compute().item() == 7.0
    assert metric.compute().dtype == torch.float16
    metric.to("meta")
    assert [(v.device.type, v.dtype) for v in metric.values] == [("meta", torch.float64)] * 2


def test_compute_before_update_warns(case: Case) -> None:
    with pytest.warns(UserWarning, match="was called before the ``update`` method"):
        value = case.make().compute()
    if case.make is ActiveUnits:
        assert value.item() == 0
    else:
        assert torch.isnan(value).all()


def test_reset_starts_over(case: Case) -> None:
    a, b = case.data(5, 6), case.data(4, 7)
    metric = case.make()
    metric.update(*a)
    metric.compute()
    metric.reset()
    metric.update(*b)
    _close(case.observe(metric), case.reference(b), case.rtol)


def test_plot_draws_a_value_and_a_series(case: Case) -> None:
    from matplotlib import pyplot as plt

    metric = case.make()
    values = [metric(*case.data(6, seed)) for seed in range(3)]
    for val in (None, values):
        fig, ax = metric.plot(val)
        assert fig is not None
        assert ax.lines or ax.patches
        plt.close(fig)


# _agree_latent_shape, between threads that play processes (tests/metrics/_threads.py).


@pytest.mark.parametrize(
    ("shapes", "expected"),
    [
        ([None, (4,), (4,)], ((4,), 1)),  # process 0 has none: process 1 is the first
        ([(2, 3, 3), None], ((2, 3, 3), 0)),
        ([None, None, ()], ((), 2)),  # a scalar latent: no shapes to gather
        ([(5,), (5,)], ((5,), 0)),
        ([None, None], None),
    ],
)
def test_agree_latent_shape_gives_every_process_the_same_answer(
    shapes: list[tuple[int, ...] | None], expected: tuple[tuple[int, ...], int] | None
) -> None:
    world = ThreadWorld(len(shapes))
    cpu = torch.device("cpu")
    results = world.run(lambda r: _agree_latent_shape(shapes[r], world.gather, None, cpu))
    assert results == [expected] * len(shapes)
    assert all(calls == world.calls[0] for calls in world.calls)
    known = [len(s) for s in shapes if s is not None]
    assert len(world.calls[0]) == (2 if known and max(known) > 0 else 1)


def test_agree_latent_shape_raises_on_every_process() -> None:
    shapes = [(3,), None, (2, 2, 2)]
    world = ThreadWorld(3)
    cpu = torch.device("cpu")
    errors = world.run(lambda r: _agree_latent_shape(shapes[r], world.gather, None, cpu))
    assert all(isinstance(e, ValueError) and str(e) == str(errors[0]) for e in errors)
    with pytest.raises(
        ValueError,
        match=r"Argument mu should have the same latent shape on every process, "
        r"but given \(3,\) on process 0, \(2, 2, 2\) on process 2",
    ):
        raise errors[0]
