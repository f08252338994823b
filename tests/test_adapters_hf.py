"""The Hugging Face adapter (``harness.integrations.huggingface``) takes the plain loop's steps.

``SharpnessAwareTrainer`` on a tiny BERT built from a config (no download, dropout off) ends with the weights of a
plain loop on the same batches from the same initial weights (``create_optimizer`` with the Trainer's AdamW
settings, the same linear schedule and gradient clipping of the base optimizer's gradient), for SAM and LookSAM;
also in micro-batches (gradient accumulation within a pass); the Trainer's gradient accumulation, fp16 and
a negative micro-batch size are refused; without transformers the import names the extra.
"""

from __future__ import annotations

import copy

import pytest
import torch

import harness
from harness.errors import UsageError
from harness.run.build import clip_before_each_step

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")
from harness.integrations.huggingface import SharpnessAwareTrainer  # noqa: E402

STEPS = 4
BATCH = 8
LR, WEIGHT_DECAY, MAX_GRAD_NORM = 1e-3, 0.01, 0.1  # a norm the gradients exceed: clipping acts


def _model() -> transformers.PreTrainedModel:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=3,
    )
    return transformers.BertForSequenceClassification(config)


def _examples() -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 50, (STEPS * BATCH, 10), generator=generator)
    labels = torch.randint(0, 3, (STEPS * BATCH,), generator=generator)
    return [
        {"input_ids": ids[i], "attention_mask": torch.ones(10, dtype=torch.long), "labels": labels[i]}
        for i in range(len(ids))
    ]


def _arguments(tmp_path, **overrides) -> transformers.TrainingArguments:
    settings = {
        "output_dir": str(tmp_path),
        "max_steps": STEPS,
        "per_device_train_batch_size": BATCH,
        "learning_rate": LR,
        "weight_decay": WEIGHT_DECAY,
        "max_grad_norm": MAX_GRAD_NORM,
        "lr_scheduler_type": "linear",
        "train_sampling_strategy": "sequential",
        "use_cpu": True,
        "report_to": "none",
        "save_strategy": "no",
        "disable_tqdm": True,
        "seed": 0,
    }
    return transformers.TrainingArguments(**{**settings, **overrides})


def _plain_loop(method: str, model: torch.nn.Module) -> tuple[torch.optim.Optimizer, int]:
    """The steps on whole batches; the optimizer and the number of passes its closures ran."""
    base = {"name": "adamw", "lr": LR, "weight_decay": WEIGHT_DECAY, "betas": (0.9, 0.999), "eps": 1e-8}
    optimizer = harness.create_optimizer(method, model, base=base, total_steps=STEPS)
    clip_before_each_step(optimizer.base_optimizer, MAX_GRAD_NORM)
    schedule = transformers.get_scheduler("linear", optimizer, num_warmup_steps=0, num_training_steps=STEPS)
    examples = _examples()
    passes = []
    model.train()
    for start in range(0, len(examples), BATCH):
        batch = transformers.default_data_collator(examples[start : start + BATCH])

        def closure(batch=batch):
            passes.append(1)
            optimizer.zero_grad(set_to_none=True)
            loss = model(**batch).loss
            loss.backward()
            return loss.detach()

        optimizer.step(closure)
        schedule.step()
    return optimizer, len(passes)


class CountingTrainer(SharpnessAwareTrainer):
    def compute_loss(self, *args, **kwargs):
        self.losses_computed = getattr(self, "losses_computed", 0) + 1
        return super().compute_loss(*args, **kwargs)


@pytest.mark.parametrize(("method", "micro_batch_size"), [("sam", 0), ("looksam", 0), ("looksam", 3)])
def test_the_trainer_takes_the_plain_loops_steps(tmp_path, method, micro_batch_size):
    """micro_batch_size = 3 on batches of 8: micro-batches of 3, 3 and 2 examples in every pass, each loss weighted
    by its share, accumulate to the whole batch's gradient (BERT has no BatchNorm): the same steps."""
    model = _model()
    reference = copy.deepcopy(model)
    trainer = CountingTrainer(
        model=model,
        args=_arguments(tmp_path),
        train_dataset=_examples(),
        method=method,
        micro_batch_size=micro_batch_size,
    )
    trainer.train()
    optimizer, passes = _plain_loop(method, reference)
    assert trainer.losses_computed == passes * (3 if micro_batch_size else 1)
    assert trainer.state.global_step == STEPS
    stepped = trainer.optimizer.optimizer.sharpness_aware
    assert type(stepped) is type(optimizer) and stepped.steps_taken == optimizer.steps_taken == STEPS
    assert stepped.last_step.perturbed == optimizer.last_step.perturbed
    assert stepped.param_groups[0]["lr"] == pytest.approx(optimizer.param_groups[0]["lr"], abs=1e-12)
    expected = dict(reference.named_parameters())
    for name, value in model.named_parameters():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=1e-6, msg=name)


def test_an_optimizer_passed_in_is_used_and_steps_the_variant(tmp_path):
    model = _model()
    optimizer = harness.create_optimizer("sam", model, base={"name": "sgd", "lr": 0.01}, rho=0.1)
    trainer = SharpnessAwareTrainer(
        model=model, args=_arguments(tmp_path, max_steps=2), train_dataset=_examples(), optimizers=(optimizer, None)
    )
    trainer.train()
    assert trainer.optimizer.optimizer.sharpness_aware is optimizer and optimizer.steps_taken == 2


def test_every_pass_gets_the_labels_when_a_label_smoother_pops_them(tmp_path):
    """With label smoothing ``Trainer.compute_loss`` pops "labels" from the inputs it is given; the second pass
    (and every micro-batch) must still find them."""
    for micro_batch_size in (0, 4):
        model = _model()
        arguments = _arguments(tmp_path, max_steps=2, label_smoothing_factor=0.1)
        trainer = SharpnessAwareTrainer(
            model=model, args=arguments, train_dataset=_examples(), method="sam", micro_batch_size=micro_batch_size
        )
        trainer.train()
        stepped = trainer.optimizer.optimizer.sharpness_aware
        assert stepped.steps_taken == 2 and stepped.last_step.perturbed


@pytest.mark.parametrize(
    ("overrides", "refusal"),
    [
        ({"gradient_accumulation_steps": 2}, r"gradient_accumulation_steps=2; .* set it to 1"),
        ({"fp16": True}, r"fp16=True; .* use bf16=True"),
        ({"micro_batch_size": -1}, r"micro_batch_size must be an integer >= 0 .* got -1"),
    ],
)
def test_what_a_step_of_several_passes_cannot_do_is_refused(tmp_path, overrides, refusal):
    settings = {key: overrides.pop(key) for key in list(overrides) if key == "micro_batch_size"}
    try:
        arguments = _arguments(tmp_path, **overrides)
    except ValueError as unavailable:  # fp16 on a machine that has no fp16 device
        pytest.skip(str(unavailable))
    with pytest.raises(UsageError, match=refusal):
        SharpnessAwareTrainer(model=_model(), args=arguments, train_dataset=_examples(), method="sam", **settings)
