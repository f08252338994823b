"""``harness.run.sub_batches.split_batch``: a batch of any nesting cut into micro-batches (the adapters'
``micro_batch_size``), every tensor along its first dimension, the rest as is; disagreeing lengths refused."""

from __future__ import annotations

from typing import NamedTuple

import pytest
import torch

from harness.errors import UsageError
from harness.run.sub_batches import split_batch


class Pair(NamedTuple):
    inputs: torch.Tensor
    targets: torch.Tensor


def test_every_tensor_of_a_nested_batch_is_cut_along_its_first_dimension_and_the_rest_kept():
    batch = {
        "pair": Pair(torch.arange(10.0).reshape(5, 2), torch.arange(5)),
        "ids": [torch.arange(5) * 10],
        "temperature": torch.tensor(0.5),
        "name": "digits",
    }
    pieces = split_batch(batch, 2, "test")
    assert [examples for examples, _ in pieces] == [2, 2, 1]
    for (examples, piece), start in zip(pieces, (0, 2, 4), strict=True):
        assert isinstance(piece["pair"], Pair) and isinstance(piece["ids"], list)
        assert torch.equal(piece["pair"].inputs, batch["pair"].inputs[start : start + examples])
        assert torch.equal(piece["pair"].targets, torch.arange(start, start + examples))
        assert torch.equal(piece["ids"][0], torch.arange(start, start + examples) * 10)
        assert piece["temperature"] is batch["temperature"] and piece["name"] == "digits"
    rejoined = torch.cat([piece["pair"].inputs for _, piece in pieces])
    assert torch.equal(rejoined, batch["pair"].inputs)


def test_a_batch_whose_tensors_disagree_on_its_length_or_has_none_is_refused():
    with pytest.raises(UsageError, match=r"Owner: micro_batch_size=2 .* found \[4, 5\]"):
        split_batch((torch.zeros(5, 3), torch.zeros(4)), 2, "Owner")
    with pytest.raises(UsageError, match=r"found no tensor"):
        split_batch({"name": "x"}, 2, "Owner")
