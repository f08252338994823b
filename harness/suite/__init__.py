"""YAML suite -> validated ``Suite`` -> list of ``RunSpec`` (grid expansion, presets, overrides).

A suite is data (shared/DESIGN.md section 5)::

    name: quickstart
    description: digits, small-cnn, erm vs sam
    defaults:                      # run settings shared by every run (all optional)
      epochs: 15
      batch_size: 64
      base_optimizer: {name: momentum, lr: 0.05, momentum: 0.9, weight_decay: 5.0e-4}
      lr_schedule: {name: cosine, warmup_epochs: 1}
    methods: [erm, sam]            # presets, or mappings (see below)
    models: [small-cnn]            # names, or {name: mlp, hidden: 128}
    datasets: [digits]             # names, or {name: digits, test_fraction: 0.2}
    seeds: [0, 1, 2]
    noise_rates: [0.0]             # needs a dataset that lists noise_rate in its defaults

A method is a preset name, a preset with overrides
(``{preset: sam, name: sam-rho0.1, scheduler: {rho: 0.1}}``) or inline
(``{name: my-sam, optimizer: {name: sam}, scheduler: {name: constant, rho: 0.1}}``); any of them may
say why it runs outside its paper's setting (``extension: "<why>"``, ``harness.suite.domains``).

The schema is strict: an unknown key is an error with a "did you mean"; values are type- and
range-checked before anything trains. An entry repeated on a grid axis (a seed, a model with the same
parameters, a method name) is an error, since it would give two runs the same run id; label noise is
set only through ``noise_rates``, never in a dataset entry. Every ``SuiteError`` names the file, the
key path, the bad value and what was expected. ``--set key=value`` overrides are applied to the document before
validation (``epochs=2`` is short for ``defaults.epochs=2``). The suite name and every method name become parts
of file paths, so they follow ``harness.paths.NAME_RULE``; the file and the ``--set`` values are read by
``yaml_loader`` (no duplicate keys, bounded size, nesting and alias expansion).

Modules, in the order ``load_suite`` uses them: ``load`` (the file, ``--set``, the validation's order),
``yaml_loader`` (strict, bounded YAML), ``checks`` (the value checks and their messages), ``settings``
(the ``defaults:`` block, base optimizer, lr schedule), ``methods`` (methods, presets, components and
their parameters), ``grid`` (model x dataset checks, grid expansion, ``--smoke``), ``conditions``
(settings for the runs whose grid values match), ``domains`` (a preset's paper models and the runs'
``extension`` texts), ``references`` (published numbers, every matching cell), ``factories`` (each
plugin's factory path), ``record`` (``Suite``).
"""

from harness.suite.factories import import_factories
from harness.suite.grid import MAX_RUNS, SMOKE_BATCH, SMOKE_EXAMPLES
from harness.suite.load import TOP_LEVEL_KEYS, apply_overrides, load_suite
from harness.suite.record import DEFAULT_EXECUTOR, Suite

__all__ = [
    "DEFAULT_EXECUTOR",
    "MAX_RUNS",
    "SMOKE_BATCH",
    "SMOKE_EXAMPLES",
    "TOP_LEVEL_KEYS",
    "Suite",
    "apply_overrides",
    "import_factories",
    "load_suite",
]
