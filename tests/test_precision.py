"""Mixed precision in the closure: bf16 autocast, fp16 loss scaling across the two passes of a step,
channels-last inputs. Expected values come from an fp32 run of the same step, or are exact (a
skipped step leaves the weights bit-for-bit unchanged and halves the scale once)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from harness_sam.erm import ERM
from harness_sam.gsam import GSAM
from harness_sam.looksam import LookSAM
from harness_sam.sam import SAM
from harness_schedules.basic import Constant, Never, Periodic
from torch import nn

from harness.run.closure import BatchClosure, batchnorm_modules
from harness.run.precision import LossScaler, Precision, fp16_autocast_available, prepare_model

INIT_SCALE = 2.0**10


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))


def batch(seed: int = 0, n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=generator), torch.randint(0, 3, (n,), generator=generator)


def make(kind: str, model: nn.Module, rho: float = 0.1):
    base = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    params = list(model.parameters())
    if kind == "erm":
        return ERM(params, base_optimizer=base, scheduler=Never())
    if kind == "gsam":
        return GSAM(params, base_optimizer=base, scheduler=Constant(rho), alpha=0.3)
    if kind == "looksam":
        return LookSAM(params, base_optimizer=base, scheduler=Periodic(rho=rho, k=2), alpha=0.7)
    return SAM(params, base_optimizer=base, scheduler=Constant(rho))


needs_fp16 = pytest.mark.skipif(not fp16_autocast_available(), reason="this torch build has no CPU fp16 autocast")


def relative_update_error(model: nn.Module, reference: nn.Module, start: nn.Module) -> float:
    """||delta - delta_ref|| / ||delta_ref|| over all weights, delta = weights after - weights before."""
    diff, norm = 0.0, 0.0
    for p, r, s in zip(model.parameters(), reference.parameters(), start.parameters(), strict=True):
        delta, delta_ref = p.detach() - s.detach(), r.detach() - s.detach()
        diff += float((delta - delta_ref).pow(2).sum())
        norm += float(delta_ref.pow(2).sum())
    return (diff / norm) ** 0.5


def step(model: nn.Module, optimizer, precision: Precision | None, seed: int = 0) -> BatchClosure:
    inputs, targets = batch(seed)
    closure = BatchClosure(
        model, nn.functional.cross_entropy, inputs, targets, batchnorm_modules(model), precision=precision
    )
    optimizer.step(closure)
    closure.finish()
    return closure


@pytest.mark.parametrize("kind", ["sam", "gsam", "looksam"])
def test_bf16_autocast_sam_step_matches_fp32(kind):
    start = mlp()
    reference, candidate = copy.deepcopy(start), copy.deepcopy(start)
    dtypes = []
    candidate[0].register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
    ref_opt, opt = make(kind, reference), make(kind, candidate)
    for seed in range(4):
        step(reference, ref_opt, None, seed)
        closure = step(candidate, opt, Precision("bf16", "cpu"), seed)
    assert closure.calls == (2 if kind != "looksam" else 1)  # looksam k=2: step 3 reuses g_v
    assert set(dtypes) == {torch.bfloat16}  # every pass ran under autocast
    assert all(p.dtype == torch.float32 for p in candidate.parameters())
    assert relative_update_error(candidate, reference, start) < 0.05


def test_bf16_with_batchnorm_keeps_the_running_statistics_policy():
    from harness_vision.small_models import small_cnn

    torch.manual_seed(0)
    model = small_cnn(num_classes=10, input_shape=(1, 8, 8), channels=8)
    optimizer = SAM(
        list(model.parameters()), base_optimizer=torch.optim.SGD(model.parameters(), lr=0.05), scheduler=Constant(0.05)
    )
    inputs, targets = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    closure = BatchClosure(
        model, nn.functional.cross_entropy, inputs, targets, batchnorm_modules(model), precision=Precision("bf16")
    )
    optimizer.step(closure)
    assert closure.calls == 2 and int(model[1].num_batches_tracked) == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())


@needs_fp16
@pytest.mark.parametrize("kind", ["erm", "sam", "gsam"])
def test_fp16_normal_step_matches_fp32_and_counts_towards_growth(kind):
    start = mlp()
    reference, candidate = copy.deepcopy(start), copy.deepcopy(start)
    ref_opt, opt = make(kind, reference), make(kind, candidate)
    precision = Precision("fp16", "cpu", scaler_options={"init_scale": INIT_SCALE})
    step(reference, ref_opt, None)
    closure = step(candidate, opt, precision)
    assert not closure.overflowed()
    assert relative_update_error(candidate, reference, start) < 0.02
    assert precision.scaler.get_scale() == INIT_SCALE
    assert int(precision.scaler.growth_tracker) == 1


class InjectInf:
    """A gradient hook that turns the gradient of one parameter into inf on chosen backward passes."""

    def __init__(self, parameter: nn.Parameter, passes: set[int]) -> None:
        self.calls = 0
        self.passes = passes
        parameter.register_hook(self)

    def __call__(self, grad: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls in self.passes:
            return torch.full_like(grad, float("inf"))
        return grad


@needs_fp16
@pytest.mark.parametrize(("kind", "bad_pass"), [("sam", 1), ("sam", 2), ("gsam", 2), ("looksam", 2), ("erm", 1)])
def test_fp16_step_with_an_overflowing_pass_is_skipped_and_the_scale_lowered_once(kind, bad_pass):
    model = mlp()
    optimizer = make(kind, model)
    precision = Precision("fp16", "cpu", scaler_options={"init_scale": INIT_SCALE})
    step(model, optimizer, precision, seed=0)  # a normal step first: momentum buffers and (LookSAM) g_v exist
    if kind == "looksam":
        step(model, optimizer, precision, seed=1)  # k=2: step 1 reuses g_v, step 2 (tested) is a SAM step
    before = copy.deepcopy(model.state_dict())
    momentum = {id(p): optimizer.base_optimizer.state[p]["momentum_buffer"].clone() for p in model.parameters()}
    g_v = [t.clone() for t in optimizer._orthogonal.buffers] if kind == "looksam" else None
    InjectInf(model[2].weight, {bad_pass})  # counts the backward passes after it is registered
    scale_before = precision.scaler.get_scale()
    closure = step(model, optimizer, precision, seed=5)

    assert closure.overflowed()
    assert closure.calls == (bad_pass if kind != "erm" else 1)  # an overflow in pass 1 skips pass 2
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), f"{name} changed in a skipped step"
    for p in model.parameters():
        assert torch.equal(optimizer.base_optimizer.state[p]["momentum_buffer"], momentum[id(p)])
    if kind != "erm":
        assert optimizer.last_step.extras["skipped"] is True
    if g_v is not None:
        assert all(torch.equal(a, b) for a, b in zip(optimizer._orthogonal.buffers, g_v, strict=True))
    assert precision.scaler.get_scale() == scale_before * 0.5  # lowered exactly once
    closure.finish()  # idempotent: the runner and the optimizer may both call it
    assert precision.scaler.get_scale() == scale_before * 0.5

    closure = step(model, optimizer, precision, seed=6)  # training goes on at the lower scale
    assert not closure.overflowed()
    assert any(not torch.equal(value, before[name]) for name, value in model.state_dict().items())


@needs_fp16
def test_fp16_m_sharpness_step_with_an_overflow_is_skipped():
    model = mlp()
    base = torch.optim.SGD(model.parameters(), lr=0.1)
    optimizer = SAM(list(model.parameters()), base_optimizer=base, scheduler=Constant(0.1), m=8)
    precision = Precision("fp16", "cpu", scaler_options={"init_scale": INIT_SCALE})
    before = copy.deepcopy(model.state_dict())
    InjectInf(model[0].weight, {4})  # chunk 2, pass 2
    closure = step(model, optimizer, precision)
    assert closure.overflowed() and closure.calls == 4
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert precision.scaler.get_scale() == INIT_SCALE * 0.5


def test_loss_scaler_grows_after_the_interval_and_round_trips():
    scaler = LossScaler("cpu", init_scale=8.0, growth_interval=3)
    finite = torch.zeros(())
    for _ in range(3):
        scaler.update(finite)
    assert scaler.get_scale() == 16.0 and int(scaler.growth_tracker) == 0
    scaler.update(torch.ones(()))
    assert scaler.get_scale() == 8.0
    other = LossScaler("cpu")
    other.load_state_dict(scaler.state_dict())
    assert other.get_scale() == 8.0 and other.growth_interval == 3


def test_loss_scaler_unscales_and_flags_non_finite_gradients():
    scaler = LossScaler("cpu", init_scale=4.0)
    grads = [torch.full((3,), 8.0), torch.tensor([4.0, float("nan")])]
    found = torch.zeros(())
    scaler.unscale_(grads[:1], found)
    assert float(found) == 0.0 and torch.equal(grads[0], torch.full((3,), 2.0))
    scaler.unscale_(grads[1:], found)
    assert float(found) == 1.0


def test_precision_refuses_unknown_modes():
    with pytest.raises(ValueError, match="precision"):
        Precision("fp8")


def test_channels_last_inputs_and_model_give_the_same_sam_step():
    from harness_vision.small_models import small_cnn

    torch.manual_seed(0)
    start = small_cnn(num_classes=10, input_shape=(3, 8, 8), channels=8)
    dense, last = copy.deepcopy(start), prepare_model(copy.deepcopy(start), channels_last=True)
    assert last[0].weight.is_contiguous(memory_format=torch.channels_last)
    inputs, targets = torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,))
    for model, precision in ((dense, None), (last, Precision("fp32", channels_last=True))):
        optimizer = SAM(
            list(model.parameters()), base_optimizer=torch.optim.SGD(model.parameters(), lr=0.05), scheduler=Constant()
        )
        closure = BatchClosure(
            model, nn.functional.cross_entropy, inputs, targets, batchnorm_modules(model), precision=precision
        )
        optimizer.step(closure)
        if precision is not None:
            assert closure.inputs.is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(dense.parameters(), last.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


# --- the runner: suite settings precision, channels_last, compile ------------------------------------------------

RUNNER_SUITE = """
    name: precision
    defaults: {{epochs: 1, batch_size: 64, {settings}}}
    methods: [sam]
    models: [{{name: small-cnn, channels: 4}}]
    datasets: [{{name: digits, limit_train: 256, limit_test: 128}}]
"""


def _train(tmp_path, name: str, settings: str) -> dict:
    from harness.cli import main
    from harness.results.read import read_runs

    from .conftest import write_suite

    suite = write_suite(tmp_path / f"{name}.yaml", RUNNER_SUITE.format(settings=settings))
    assert main(["run", str(suite), "--results-dir", str(tmp_path)]) == 0
    return read_runs(tmp_path / "precision").set_index("run_id").sort_values("finished_at").iloc[-1].to_dict()


@pytest.mark.slow
def test_suite_precision_settings_reach_the_runner(tmp_path):
    # Runs train in worker processes: what reached the runner shows in the recorded config and the numbers.
    fp32 = _train(tmp_path, "fp32", "precision: fp32")
    assert {"precision", "channels_last", "compile"}.isdisjoint(json.loads(fp32["config"]))  # earlier run ids kept
    bf16 = _train(tmp_path, "bf16", "precision: bf16")
    assert json.loads(bf16["config"])["precision"] == "bf16" and bf16["status"] == "ok"
    assert bf16["train_loss"] != fp32["train_loss"]  # autocast changed the arithmetic ...
    assert bf16["train_loss"] == pytest.approx(fp32["train_loss"], rel=0.05)  # ... and not the training
    fp16 = _train(tmp_path, "fp16", "precision: fp16")
    assert fp16["status"] == "ok" and fp16["train_loss"] == pytest.approx(fp32["train_loss"], rel=0.05)
    assert fp16["train_loss"] != fp32["train_loss"]
    channels_last = _train(tmp_path, "channels-last", "channels_last: true")
    assert json.loads(channels_last["config"])["channels_last"] is True
    assert channels_last["train_loss"] == pytest.approx(fp32["train_loss"], rel=1e-4)


def test_suite_refuses_an_unknown_precision(tmp_path):
    from harness.errors import SuiteError
    from harness.plugins import Registry
    from harness.suite import load_suite

    from .conftest import write_suite

    suite = write_suite(tmp_path / "bad.yaml", RUNNER_SUITE.format(settings="precision: fp8"))
    with pytest.raises(SuiteError, match=r"bad\.yaml: defaults\.precision: 'fp8' is invalid; expected fp32, bf16"):
        load_suite(str(suite), Registry.from_plugins(), [])
    suite = write_suite(tmp_path / "bad2.yaml", RUNNER_SUITE.format(settings="compile: 'yes'"))
    with pytest.raises(SuiteError, match=r"defaults\.compile: 'yes' is invalid; expected true or false"):
        load_suite(str(suite), Registry.from_plugins(), [])


def _run_spec(tmp_path, settings: str, overrides=()):
    from harness.plugins import Registry
    from harness.suite import load_suite

    from .conftest import write_suite

    registry = Registry.from_plugins()
    suite = write_suite(tmp_path / "s.yaml", RUNNER_SUITE.format(settings=settings))
    return load_suite(str(suite), registry, list(overrides)).runs[0], registry


def test_runner_builds_channels_last_weights_compiled_model_and_the_precision(tmp_path):
    from harness.run.build import build

    run, registry = _run_spec(tmp_path, "channels_last: true, compile: true", ["precision=bf16"])
    assert (run.precision, run.channels_last, run.compile) == ("bf16", True, True)  # --set without defaults.
    setup = build(run, registry)
    convolution = next(p for p in setup.model.parameters() if p.dim() == 4 and p.shape[1] > 1)  # not the 1-channel stem
    assert convolution.is_contiguous(memory_format=torch.channels_last) and not convolution.is_contiguous()
    assert isinstance(setup.train_model, torch._dynamo.eval_frame.OptimizedModule)
    assert setup.train_model._orig_mod is setup.model and setup.first_pass is None
    assert (setup.precision.mode, setup.precision.channels_last) == ("bf16", True)
    plain = build(_run_spec(tmp_path, "precision: fp32")[0], registry)
    assert plain.train_model is plain.model and plain.precision.mode == "fp32"


def test_suite_refuses_fp16_with_local_perturbation_over_several_ranks(tmp_path):
    from harness.errors import SuiteError

    settings = "precision: fp16, nproc: 2, perturbation_scope: local"
    with pytest.raises(SuiteError, match=r"defaults\.precision: 'fp16' is invalid; expected fp32 or bf16 with nproc"):
        _run_spec(tmp_path, settings)
    assert _run_spec(tmp_path, "precision: fp16, nproc: 2, perturbation_scope: global")[0].precision == "fp16"
