"""Without its optional extra, importing an adapter fails with an ImportError that says what to install."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("module", "blocked", "extra"),
    [
        ("harness.integrations.lightning", ("lightning", "lightning.pytorch"), "lightning"),
        ("harness.integrations.huggingface", ("transformers",), "hf"),
    ],
)
def test_without_the_extra_the_import_names_it(module, blocked, extra):
    block = "; ".join(f"sys.modules[{name!r}] = None" for name in blocked)
    code = f"import sys; {block}\ntry:\n    import {module}\nexcept ImportError as error:\n    print(error)\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f'pip install "sam-harness[{extra}]"' in result.stdout
