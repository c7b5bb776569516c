"""BetaTCVAELoss: the module equals the function; its weights are in-place buffers; compile."""

from __future__ import annotations

# isort: off
# First: the import guard of vaekit.handlers silences torch's jit deprecations raised by ignite.
import vaekit.handlers  # noqa: F401
# isort: on

import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Engine

from tests.nn._weights import (
    assert_one_compile_for_every_weight,
    assert_setter_refuses_bad_weights,
)
from vaekit import BetaTCVAELoss, BetaTCVAELossOutput, VAELoss
from vaekit.functional import beta_tcvae_loss
from vaekit.handlers import BetaController, BetaScheduler
from vaekit.nn._weights import _WeightedLoss
from vaekit.schedules import LinearWarmup, PIController

WEIGHTS = ["alpha", "beta", "gamma"]


def inputs(batch=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 2, 3, generator=g)
    x_hat = torch.rand(batch, 2, 3, generator=g)
    mu = torch.randn(batch, 4, generator=g)
    log_var = torch.randn(batch, 4, generator=g) - 1
    z = mu + (0.5 * log_var).exp() * torch.randn(batch, 4, generator=g)
    return x_hat, x, z, mu, log_var


@pytest.mark.parametrize("estimator", ["mss", "mws"])
@pytest.mark.parametrize("reduction", ["batchmean", "mean", "sum", ("mean", "batchmean")])
@pytest.mark.parametrize("recon", ["mse", "bce_with_logits"])
def test_module_equals_function(estimator, reduction, recon):
    settings = {"dataset_size": 50, "alpha": 0.5, "beta": 3.0, "gamma": 2.0}
    settings.update(estimator=estimator, recon=recon, reduction=reduction)
    got = BetaTCVAELoss(**settings)(*inputs())
    want = beta_tcvae_loss(*inputs(), **settings)
    assert isinstance(got, BetaTCVAELossOutput)
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)


def test_the_weights_are_written_in_place_and_stay_out_of_state_dict():
    module = BetaTCVAELoss(dataset_size=50)
    assert [module.alpha.item(), module.beta.item(), module.gamma.item()] == [1.0, 6.0, 1.0]
    buffers = {name: getattr(module, name) for name in WEIGHTS}
    values = (0.3, torch.tensor(2.5), torch.tensor([4.0]).double())
    for name, value in zip(WEIGHTS, values, strict=True):
        setattr(module, name, value)
        assert getattr(module, name) is buffers[name]
        assert getattr(module, name).shape == ()
    want = beta_tcvae_loss(*inputs(), dataset_size=50, alpha=0.3, beta=2.5, gamma=4.0)
    torch.testing.assert_close(module(*inputs()), want)
    assert module.state_dict() == {}
    assert [name for name, _ in module.named_buffers()] == ["_alpha", "_beta", "_gamma"]


def test_setting_beta_between_forward_and_backward_keeps_the_forward_beta():
    module = BetaTCVAELoss(dataset_size=50, alpha=0.0, beta=2.0, gamma=0.0)
    x_hat, x, z, mu, log_var = inputs()
    z.requires_grad_()
    out = module(x_hat, x, z, mu, log_var)
    module.beta = 5.0
    (grad,) = torch.autograd.grad(out.loss, z)
    zc = z.detach().requires_grad_()
    tc = beta_tcvae_loss(x_hat, x, zc, mu, log_var, dataset_size=50).tc
    torch.testing.assert_close(grad, 2.0 * torch.autograd.grad(tc, zc)[0])


def test_a_weight_that_requires_grad_is_refused_not_silently_detached():
    module = BetaTCVAELoss(dataset_size=50, beta=0.25)
    with pytest.raises(
        ValueError,
        match=r"Argument beta should not require grad: BetaTCVAELoss copies it into a buffer, "
        r"which drops its gradient \(pass a tensor beta to vaekit.functional.beta_tcvae_loss to "
        r"learn it\), but given a tensor with requires_grad=True",
    ):
        module.beta = torch.tensor(0.5, requires_grad=True)
    assert module.beta.item() == 0.25


@pytest.mark.parametrize("name", WEIGHTS)
def test_setters_validate_and_keep_the_value(name):
    assert_setter_refuses_bad_weights(BetaTCVAELoss(dataset_size=50, **{name: 1.5}), name, kept=1.5)


def test_settings_are_validated():
    with pytest.raises(
        TypeError, match=r"missing 1 required keyword-only argument: 'dataset_size'"
    ):
        BetaTCVAELoss()  # type: ignore[call-arg]
    with pytest.raises(ValueError, match=r"Argument dataset_size should be a positive int"):
        BetaTCVAELoss(dataset_size=0)
    with pytest.raises(ValueError, match=r"Argument estimator should be one of 'mss', 'mws'"):
        BetaTCVAELoss(dataset_size=10, estimator="stratified")
    with pytest.raises(ValueError, match=r"Argument recon should be one of 'mse'"):
        BetaTCVAELoss("ce", dataset_size=10)
    with pytest.raises(ValueError, match=r"Argument reduction should be one of 'batchmean'"):
        BetaTCVAELoss(dataset_size=10, reduction="none")
    with pytest.raises(ValueError, match=r"Argument beta should be at most 3.403e\+38"):
        BetaTCVAELoss(dataset_size=10, beta=1e300)
    module = BetaTCVAELoss(dataset_size=5)
    with pytest.raises(
        ValueError, match=r"Argument dataset_size should be at least the batch size 6, but given 5"
    ):
        module(*inputs())


def test_the_weights_survive_a_cast_to_half_precision_and_follow_to():
    module = BetaTCVAELoss(dataset_size=50, beta=16777216.0).half()
    assert module.beta.dtype == torch.float32
    assert module.beta.item() == 16777216.0
    module = module.double()
    assert all(getattr(module, n).dtype == torch.float64 for n in WEIGHTS)
    out = module.half()(*(t.half() for t in inputs()))
    assert out.loss.dtype == torch.float32
    assert out.loss.isfinite()


def test_repr_and_a_module_on_the_meta_device():
    def smooth_l1(a, b):
        return F.smooth_l1_loss(a, b, reduction="none")

    module = BetaTCVAELoss(smooth_l1, dataset_size=60000, beta=0.3, estimator="mws")
    assert repr(module) == (
        "BetaTCVAELoss(recon='smooth_l1', dataset_size=60000, estimator='mws', "
        "reduction='batchmean', alpha=1.0, beta=0.3, gamma=1.0)"
    )
    with torch.device("meta"):
        module = BetaTCVAELoss(dataset_size=10)
    assert module.beta.device.type == "meta"
    assert repr(module).endswith("alpha=meta, beta=meta, gamma=meta)")


def test_vae_loss_and_beta_tcvae_loss_share_the_weight_machinery():
    # One implementation of the buffers, the setters' checks and the cast: the same base class.
    assert isinstance(VAELoss(), _WeightedLoss)
    assert isinstance(BetaTCVAELoss(dataset_size=1), _WeightedLoss)
    assert "_apply" not in vars(VAELoss)
    assert "_apply" not in vars(BetaTCVAELoss)


def test_a_scheduler_and_a_controller_drive_beta():
    loss_fn = BetaTCVAELoss(dataset_size=50)
    batch = inputs()
    seen: list[float] = []

    def step(engine, _):
        seen.append(loss_fn.beta.item())
        return loss_fn(*batch)

    trainer = Engine(step)
    BetaScheduler(LinearWarmup(4), target=loss_fn).attach(trainer)
    trainer.run(range(6))
    assert seen == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]

    loss_fn = BetaTCVAELoss(dataset_size=50)
    trainer = Engine(lambda e, b: loss_fn(*batch))
    controller = PIController(0.0, kp=0.0, ki=0.01)
    BetaController(controller, output_transform=lambda o: o.tc, target=loss_fn).attach(trainer)
    trainer.run([0, 0])
    tc = beta_tcvae_loss(*batch, dataset_size=50).tc.item()
    assert loss_fn.beta.item() == pytest.approx(2 * 0.01 * tc, rel=1e-5)
    assert loss_fn.state_dict() == {}


def test_compiled_step_with_a_new_beta_every_step_compiles_once():
    loss_fn = BetaTCVAELoss(dataset_size=100)
    x_hat, x, *_ = inputs()
    assert_one_compile_for_every_weight(
        loss_fn,
        lambda s: loss_fn(x_hat, x, *s),
        lambda s, **weights: beta_tcvae_loss(x_hat, x, *s, dataset_size=100, **weights),
        [{"beta": beta, "gamma": 0.5 * i} for i, beta in enumerate((0.1, 6.0, 0.7, 3.0, 0.0))],
    )
