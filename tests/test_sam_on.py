"""SAM-ON (``sam`` with ``perturb: normalization``, the ``sam-on`` preset): which parameters it perturbs, and its step.

SAM-ON (Mueller et al., NeurIPS 2023; the baseline of shared/papers/002_aa5e854e0246be55.txt Sec. 5 and
seed_nusam.md section 9) is SAM whose perturbation touches only the normalization layers' weights and biases,
e = rho g_N / ||g_N|| on them and 0 elsewhere, while the base optimizer updates every parameter with the
gradient at w + e. The rule (``harness_sam.normalization``) is checked against the module types of every
model harness_vision ships; the step against that formula written out by hand.
"""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from harness_sam.normalization import normalization_names
from harness_sam.sam import SAM
from harness_schedules.basic import Constant
from harness_vision.model_specs import model_specs
from torch import nn

from harness.contract.held import optimizer_state_bytes
from harness.plugins import Registry
from harness.testing import check_optimizer

from .test_models import BIG, SMALL

NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)

# Every model harness_vision ships, in test_models.py's configurations (built here on the meta device: names
# and shapes are all the rule reads).
SHIPPED = SMALL + BIG


def owned_by_norm_layers(model: nn.Module) -> set[str]:
    """The names of the parameters that BatchNorm, LayerNorm and GroupNorm modules own, found by module type."""
    return {
        f"{prefix}.{name}" if prefix else name
        for prefix, module in model.named_modules()
        if isinstance(module, NORM_TYPES)
        for name, _ in module.named_parameters(recurse=False)
    }


def build_shipped(registry, name: str, params: dict) -> nn.Module:
    with torch.device("meta"):
        return registry.create("model", name, num_classes=10, input_shape=(3, 32, 32), **params)


def test_every_shipped_model_is_covered():
    covered = {name if not name.startswith("timm:") else "timm:" for name, _ in SHIPPED}
    assert {spec.name for spec in model_specs()} <= covered


@pytest.mark.parametrize(("name", "params"), SHIPPED, ids=lambda v: str(v) if isinstance(v, str) else "")
def test_the_rule_selects_exactly_the_normalization_parameters_of_every_shipped_model(registry, name, params):
    model = build_shipped(registry, name, params)
    assert normalization_names(list(model.named_parameters())) == owned_by_norm_layers(model)


class Mixed(nn.Module):
    """Every normalization type the rule must find, in named and in indexed (``nn.Sequential``) positions."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 1))
        self.group = nn.GroupNorm(2, 4)
        self.instance = nn.InstanceNorm2d(4, affine=True)
        self.head = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.Linear(6, 2))
        self.weight = nn.Parameter(torch.ones(2, 2))  # a 2-D top-level weight: not a normalization


def test_the_rule_finds_group_instance_and_indexed_norms():
    model = Mixed()
    expected = owned_by_norm_layers(model) | {"instance.weight", "instance.bias"}
    assert "features.1.weight" in expected and "group.bias" in expected
    assert normalization_names(list(model.named_parameters())) == expected


def test_a_pattern_replaces_the_rule_and_the_reference_codes_pattern_misses_indexed_norms():
    named = list(Mixed().named_parameters())
    assert normalization_names(named, r"^head\.1\.|group") == {
        "head.1.weight",
        "head.1.bias",
        "group.weight",
        "group.bias",
    }
    # github.com/mueller-mp/SAM-ON matches "norm" or "bn" in the names: no name of Mixed has either.
    assert normalization_names(named, "norm|bn") == set()


# --- the step ---------------------------------------------------------------------------------------------------


class TinyNet(nn.Module):
    """Linear -> BatchNorm -> tanh -> Linear; ``norm=False`` leaves the BatchNorm out."""

    def __init__(self, norm: bool = True) -> None:
        super().__init__()
        self.trunk = nn.Linear(5, 6)
        self.norm = nn.BatchNorm1d(6) if norm else nn.Identity()
        self.head = nn.Linear(6, 3)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.norm(self.trunk(inputs))))


def make(norm: bool = True) -> tuple[TinyNet, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = TinyNet(norm)
    with torch.no_grad():  # BatchNorm's affine parameters away from their (1, 0) initialization
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model, torch.randn(16, 5), torch.randint(0, 3, (16,))


LR = 0.1


def sam_on(model: nn.Module, rho: float, **options) -> SAM:
    base = torch.optim.SGD(model.parameters(), lr=LR)
    return SAM(
        list(model.named_parameters()), base_optimizer=base, scheduler=Constant(rho), perturb="normalization", **options
    )


def closure_for(model, optimizer, inputs, labels):
    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(model(inputs), labels)
        loss.backward()
        return loss

    return closure


def gradients(model: nn.Module, inputs, labels) -> dict[str, torch.Tensor]:
    model.zero_grad()
    F.cross_entropy(model(inputs), labels).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def reference_step(model: nn.Module, inputs, labels, rho: float) -> dict[str, torch.Tensor]:
    """SAM-ON written out: e = rho g_N / ||g_N|| on the normalization parameters N, 0 elsewhere; w - lr g(w + e)."""
    weights = {name: p.detach().clone() for name, p in model.named_parameters()}
    clean = gradients(model, inputs, labels)
    norm_names = owned_by_norm_layers(model)
    scale = rho / torch.sqrt(sum(clean[name].square().sum() for name in norm_names))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in norm_names:
                p.add_(scale * clean[name])
    perturbed = gradients(model, inputs, labels)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(weights[name])
    return {name: weights[name] - LR * perturbed[name] for name in weights}


@pytest.mark.parametrize("options", [{}, {"direction": "random"}], ids=["in-place", "general-path"])
def test_the_second_pass_sees_only_the_normalization_parameters_moved_by_rho(options):
    model, inputs, labels = make()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    seen: list[dict[str, torch.Tensor]] = []
    model.register_forward_pre_hook(
        lambda module, args: seen.append({name: p.detach().clone() for name, p in module.named_parameters()})
    )
    optimizer = sam_on(model, 0.2, **options)
    optimizer.step(closure_for(model, optimizer, inputs, labels))
    second = seen[1]
    assert set(seen[0]) == set(before)
    for name in ("trunk.weight", "trunk.bias", "head.weight", "head.bias"):
        assert torch.equal(second[name], before[name]), name
    moved = torch.cat([(second[name] - before[name]).flatten() for name in ("norm.weight", "norm.bias")])
    assert moved.norm().item() == pytest.approx(0.2, rel=1e-5)
    assert optimizer.last_step.perturbed


def test_a_step_equals_sam_with_a_zero_perturbation_outside_the_normalization_layers():
    model, inputs, labels = make()
    expected = reference_step(model, inputs, labels, rho=0.3)
    optimizer = sam_on(model, 0.3)
    optimizer.step(closure_for(model, optimizer, inputs, labels))
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), expected[name], msg=name)
    assert optimizer.last_step.extras["perturbation_norm"].item() == pytest.approx(0.3, rel=1e-6)


def test_only_the_normalization_parameters_are_backed_up():
    model, inputs, labels = make()
    optimizer = sam_on(model, 0.1)
    optimizer.step(closure_for(model, optimizer, inputs, labels))
    assert optimizer_state_bytes(optimizer) == 4 * 2 * 6  # float32 copies of BatchNorm1d(6)'s weight and bias


def base_steps(model: nn.Module, inputs, labels, steps: int) -> dict[str, torch.Tensor]:
    base = torch.optim.SGD(model.parameters(), lr=LR)
    for _ in range(steps):
        closure_for(model, base, inputs, labels)()
        base.step()
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize(("norm", "rho"), [(False, 0.5), (True, 0.0)], ids=["no-normalization-layer", "rho-0"])
def test_sam_on_reduces_to_the_base_optimizer(norm, rho, recwarn):
    """Without normalization parameters e is empty, and with rho = 0 it is 0: both give the base optimizer's steps."""
    model, inputs, labels = make(norm)
    expected = base_steps(make(norm)[0], inputs, labels, steps=3)
    optimizer = sam_on(model, rho)
    for _ in range(3):
        optimizer.step(closure_for(model, optimizer, inputs, labels))
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), expected[name]), name
    found = [str(w.message) for w in recwarn if "found no normalization parameter" in str(w.message)]
    assert len(found) == (0 if norm else 1)


KIT_PLUGIN = """
from harness import OptimizerSpec, hookimpl
from harness_sam.plugin import SAM_OPTIONS

@hookimpl
def register_optimizers():
    options = {{**SAM_OPTIONS, "perturb": "normalization", "normalization_pattern": "", **{options!r}}}
    return [OptimizerSpec(name="sam-on-kit", factory="harness_sam.sam:SAM", defaults=options)]
"""


@pytest.mark.parametrize("options", [{}, {"m": 4}, {"adaptive": True}], ids=["in-place", "m-sharpness", "asam-on"])
def test_sam_on_passes_the_optimizer_contract(add_entry_points, options):
    """The kit's rules (exact restore, rho=0, state_dict, fp16 overflow, ...) on ContractNet, whose BatchNorm
    is the only normalization layer."""
    add_entry_points({"sam-on-kit": KIT_PLUGIN.format(options=options)})
    outcomes = check_optimizer(Registry.from_plugins(), "sam-on-kit")
    assert set(outcomes.values()) == {"passed"}, outcomes


@pytest.mark.parametrize(
    ("options", "named", "message"),
    [
        ({"perturb": "some"}, True, "perturb must be one of ('all', 'normalization'), got 'some'"),
        ({"normalization_pattern": "bn"}, True, "normalization_pattern 'bn' needs perturb='normalization'"),
        ({"perturb": "normalization"}, False, "tells parameters by name, and 6 have none"),
        ({"perturb": "normalization", "normalization_pattern": "("}, True, "'(' is not a regular expression"),
    ],
)
def test_bad_options_are_refused_naming_the_option(options, named, message):
    model = make()[0]
    params = list(model.named_parameters()) if named else list(model.parameters())
    base = torch.optim.SGD(model.parameters(), lr=LR)
    with pytest.raises(ValueError, match=re.escape(message)):
        SAM(params, base_optimizer=base, scheduler=Constant(0.1), **options)


def test_the_preset_is_sam_on_with_adamw_and_no_delay(registry):
    preset = registry.get("preset", "sam-on")
    assert (preset.optimizer, preset.scheduler) == ("sam", "constant")
    assert preset.optimizer_params == {"perturb": "normalization"}
    assert preset.base_optimizer["name"] == "adamw"
    assert "2306.04226" in preset.paper
