"""The seeds of stochastic components: derived from the run seed unless a suite pins one.

A component that draws random numbers of its own (SS-SAM's Bernoulli trials, 001_543051aac35e9f16.txt
Sec. 3.3 and 4.1; the random-direction control of 003_dc502e6d0d8ca36d.txt App. C.5; nuSAM's initial
``u_i``, shared/papers/seed_nusam.md section 3.2) takes a ``seed`` parameter whose default is None.
``component_seed(seed, salt)`` turns it into the seed of the component's private generator: ``seed``
itself when the suite set one, else a 63-bit SHA-256 of the run seed and ``salt`` (the component's
name), so every run seed draws its own stream and two components of one run draw independent ones.

The run seed is the one ``harness.run.build`` builds the run's components under (``building_with``);
it is recorded here, not read from torch's global generator, so a model or dataset factory that
reseeds torch cannot change it. Every rank of a distributed run builds under the same run seed and so
takes the same decisions. A component built outside a run (a test, a notebook) sees run seed 0.
The module imports no torch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

#: The seed of the run whose components are being built; 0 outside ``building_with``.
_RUN_SEED: ContextVar[int] = ContextVar("harness_run_seed", default=0)


@contextmanager
def building_with(run_seed: int) -> Iterator[None]:
    """Components built inside this block derive their default seeds from ``run_seed``."""
    token = _RUN_SEED.set(run_seed)
    try:
        yield
    finally:
        _RUN_SEED.reset(token)


def component_seed(seed: int | None, salt: str) -> int:
    """The seed of a component's private generator: ``seed`` when given, else one derived from the run seed.

    seed: the component's ``seed`` parameter, an integer >= 0 that pins the stream whatever the run seed,
        or None (the default): a 63-bit integer from SHA-256 of the run seed and ``salt``.
    salt: the component's name (``"bernoulli"``), so components of one run draw independent streams.
    """
    if seed is None:
        digest = hashlib.sha256(f"{_RUN_SEED.get()}:{salt}".encode()).digest()
        return int.from_bytes(digest[:8], "big") >> 1
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"{salt}: seed must be an integer >= 0 or null (derive it from the run seed), got {seed!r}")
    return seed
