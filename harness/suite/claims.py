"""Claims: a paper's headline relative result as a checkable statement (``suites/reference/claims.yaml``).

A claims file holds a list of claims, each the effect one method shows against another (or on its own) in a
paper, with the bound the measured effect must respect for the claim to hold::

    claims:
      - id: sam-beats-erm-under-label-noise
        paper: 003_dc502e6d0d8ca36d         # a paper of paper_results.csv
        table: Table 4                      # a table of that paper there (or a section: "Sec. 4.3")
        statement: "SAM's test accuracy is far above SGD's when 20-80% of the labels are flipped."
        metric: test_acc                    # one of METRICS
        method: sam                         # a preset: every method built from it is judged
        against: erm                        # a preset; omitted for a metric of one method (sam_fraction)
        direction: at_least                 # the effect must be >= bound (at_most: <=)
        bound: 5.0                          # in the metric's unit (METRICS)
        paper_effect: 19.9                  # what the paper's table shows, same unit
        shown_under: "CIFAR-10, ResNet-32, 200 epochs"
        when: {noise_rate: {min: 0.2}}      # the conditions it is judged on (optional)
        params: {p_scheduler_k: 5}          # only runs of ``method`` with these result columns (optional)
        suites: [cifar_noise.yaml]          # shipped suites that test it (optional: what to run)
        note: "..."

The file is validated like a suite (``harness validate FILE``): an unknown key, a preset that does not
exist, a paper or table ``paper_results.csv`` does not have, a duplicate id: an error naming the file, the
claim and the key. The shipped file is the project's; a plugin ships claims for its own variants through
the ``register_claims`` hook (paths of files like this one); two files claiming one id is an error naming
both. The verdicts are computed in ``harness.report.claims``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.errors import SuiteError, did_you_mean
from harness.plugins import Registry
from harness.suite.checks import MISSING, Checker

KEYS = (
    "id",
    "paper",
    "table",
    "statement",
    "metric",
    "method",
    "against",
    "direction",
    "bound",
    "paper_effect",
    "shown_under",
    "when",
    "params",
    "suites",
    "note",
)
REQUIRED = ("id", "paper", "table", "statement", "metric", "method", "direction", "bound", "paper_effect")


@dataclasses.dataclass(frozen=True)
class Metric:
    """What a claim's ``metric`` measures: its unit, whether it compares ``method`` with ``against``, what the
    effect is, and the result column it is computed from."""

    unit: str
    paired: bool
    meaning: str
    column: str


METRICS = {
    "test_acc": Metric("points", True, "test accuracy of method minus against, in percentage points", "test_acc"),
    "best_test_acc": Metric(
        "points", True, "best-epoch test accuracy of method minus against, in percentage points", "best_test_acc"
    ),
    "sam_fraction": Metric(
        "fraction", False, "the share of the method's steps that perturbed (%SAM as a fraction)", "sam_fraction"
    ),
    "cost_ratio": Metric("x", True, "train time of method over train time of against", "train_time_s"),
    "extra_state_ratio": Metric(
        "x",
        True,
        "perturbation state of method over that of against (perturbation_state_bytes: beyond the base optimizer's)",
        "perturbation_state_bytes",
    ),
}
DIRECTIONS = ("at_least", "at_most")
ID_RULE = re.compile(r"[a-z0-9][a-z0-9-]{0,99}")
#: The shipped claims, beside the shipped suites (found from the package when installed from the repository).
SHIPPED = Path(__file__).resolve().parents[2] / "suites" / "reference" / "claims.yaml"
REFERENCE_TABLE = Path(__file__).resolve().parents[2] / "suites" / "reference" / "paper_results.csv"


@dataclasses.dataclass(frozen=True)
class Claim:
    """One validated claim (see the module docstring for what each field means)."""

    id: str
    paper: str
    table: str
    statement: str
    metric: str
    method: str
    against: str
    direction: str
    bound: float
    paper_effect: float
    shown_under: str = ""
    noise_min: float = -math.inf
    noise_max: float = math.inf
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    suites: tuple[str, ...] = ()
    note: str = ""
    source: str = ""

    @property
    def unit(self) -> str:
        return METRICS[self.metric].unit

    @property
    def paired_metric(self) -> bool:
        """Whether the effect compares ``method`` with ``against`` (else it is the method's own value)."""
        return METRICS[self.metric].paired

    @property
    def column(self) -> str:
        """The result column the effect is computed from."""
        return METRICS[self.metric].column

    def holds(self, value: float) -> bool:
        """Whether an effect of ``value`` is on the claimed side of the bound."""
        return value >= self.bound if self.direction == "at_least" else value <= self.bound

    def describe_bound(self) -> str:
        """``>= -0.5 points``."""
        return f"{'>=' if self.direction == 'at_least' else '<='} {self.bound:g} {self.unit}"


def load_claims(
    path: str | Path, registry: Registry, tables: Mapping[str, set[str]] | None = None, *, strict: bool = True
) -> list[Claim]:
    """The validated claims of the file at ``path``. ``tables``: paper -> its tables (default: the shipped
    ``paper_results.csv``); a claim of one of those papers cites one of its tables or a section or figure
    (``Sec. 4.3``, ``Fig. 2``). ``strict``: a claim's paper must be among them too (the shipped file; a
    plugin's claims may cite papers the project has no numbers of). Raises ``SuiteError``."""
    from harness.suite.load import read_document

    path = str(path)
    checker = Checker(path, ())
    document = checker.mapping("(top level)", read_document(path, "claims file") or MISSING)
    checker.keys("(top level)", document, ("claims",))
    tables = published_tables() if tables is None else tables
    claims: list[Claim] = []
    for index, raw in enumerate(checker.listed("claims", document.get("claims", MISSING))):
        claims.append(_claim(checker, registry, tables, raw, index, path, strict))
    seen: dict[str, int] = {}
    for index, claim in enumerate(claims):
        if claim.id in seen:
            raise SuiteError(f"{path}: claims[{index}].id: {claim.id!r} is already claims[{seen[claim.id]}]'s")
        seen[claim.id] = index
    return claims


def all_claims(registry: Registry, extra: Sequence[str | Path] = ()) -> list[Claim]:
    """The shipped claims (when installed from the repository), those plugins register (``register_claims``)
    and ``extra`` files; an id two files claim is an error naming both."""
    paths = [SHIPPED] if SHIPPED.is_file() else []
    for registered in registry.manager.hook.register_claims():
        paths += [Path(p) for p in registered or ()]
    paths += [Path(p) for p in extra]
    found: dict[str, Claim] = {}
    for path in dict.fromkeys(p.resolve() for p in paths):
        for claim in load_claims(path, registry, strict=path == SHIPPED.resolve()):
            if claim.id in found:
                raise SuiteError(
                    f"{path}: claim {claim.id!r} is already claimed by {found[claim.id].source}; "
                    "expected ids unique across every claims file (a plugin's claims cannot replace the shipped ones)"
                )
            found[claim.id] = claim
    return list(found.values())


def is_claims_file(path: str | Path) -> bool:
    """Whether ``path`` holds a claims file (a top-level ``claims:`` key) rather than a suite."""
    from harness.suite.load import read_document

    try:
        document = read_document(path, "claims file")
    except SuiteError:
        return False  # the suite loader reports it
    return isinstance(document, Mapping) and "claims" in document


def published_tables(path: Path = REFERENCE_TABLE) -> dict[str, set[str]]:
    """paper -> the tables ``paper_results.csv`` has numbers of (empty when the file is not there)."""
    from harness.results.reference import read_table

    tables: dict[str, set[str]] = {}
    for row in read_table(path) if path.is_file() else []:
        tables.setdefault(row["paper"], set()).add(row["table"])
    return tables


def _claim(
    checker: Checker, registry: Registry, tables: Mapping[str, set[str]], raw: Any, index: int, path: str, strict: bool
) -> Claim:
    where = f"claims[{index}]"
    block = checker.mapping(where, raw)
    if isinstance(block.get("id"), str):
        where = f"claims[{index}] ({block['id']})"
    checker.keys(where, block, KEYS)
    for key in REQUIRED:
        if key not in block:
            raise checker.fail(f"{where}.{key}", MISSING, f"a value: a claim needs {', '.join(REQUIRED)}")
    claim_id = block["id"]
    if not isinstance(claim_id, str) or not ID_RULE.fullmatch(claim_id):
        raise checker.fail(f"{where}.id", claim_id, "lowercase letters, digits and '-', at most 100 characters")
    paper, table = str(block["paper"]), str(block["table"])
    if strict and paper not in tables:
        shown = ", ".join(sorted(tables)) or "none: the file is not there"
        raise checker.fail(
            f"{where}.paper", paper, f"a paper of paper_results.csv ({shown}){did_you_mean(paper, tables)}"
        )
    if paper in tables and table not in tables[paper] and not table.startswith(("Sec.", "Fig.")):
        shown = sorted(tables[paper])
        raise checker.fail(
            f"{where}.table",
            table,
            f"a table of {paper} in paper_results.csv ({', '.join(shown)}) or a section ('Sec. 4.3')"
            f"{did_you_mean(table, shown)}",
        )
    metric = block["metric"]
    if metric not in METRICS:
        raise checker.fail(
            f"{where}.metric", metric, f"one of {', '.join(METRICS)}{did_you_mean(str(metric), METRICS)}"
        )
    presets = registry.names("preset")
    method = _preset(checker, f"{where}.method", block["method"], presets)
    compares = METRICS[metric].paired
    if compares and "against" not in block:
        raise checker.fail(
            f"{where}.against", MISSING, f"a preset to compare with: metric {metric} is {METRICS[metric].meaning}"
        )
    if not compares and "against" in block:
        raise checker.fail(
            f"{where}.against", block["against"], f"no value: metric {metric} is {METRICS[metric].meaning}"
        )
    against = _preset(checker, f"{where}.against", block["against"], presets) if compares else ""
    direction = block["direction"]
    if direction not in DIRECTIONS:
        raise checker.fail(f"{where}.direction", direction, "at_least (effect >= bound) or at_most (effect <= bound)")
    bound = checker.number(f"{where}.bound", block["bound"], -math.inf)
    paper_effect = checker.number(f"{where}.paper_effect", block["paper_effect"], -math.inf)
    low, high = _noise(checker, f"{where}.when", block.get("when", {}))
    params = checker.mapping(f"{where}.params", block.get("params", {}))
    for key, value in params.items():
        if not str(key).startswith("p_") or isinstance(value, (Mapping, list)):
            raise checker.fail(f"{where}.params.{key}", value, "a p_* result column (p_scheduler_k) and a plain value")
    suites = tuple(str(s) for s in checker.listed(f"{where}.suites", block["suites"])) if "suites" in block else ()
    texts = {key: block.get(key, "") for key in ("statement", "shown_under", "note")}
    for key, text in texts.items():
        if not isinstance(text, str) or (key == "statement" and not text):
            raise checker.fail(f"{where}.{key}", text, "a text")
    return Claim(
        id=claim_id,
        paper=paper,
        table=table,
        metric=metric,
        method=method,
        against=against,
        direction=direction,
        bound=bound,
        paper_effect=paper_effect,
        noise_min=low,
        noise_max=high,
        params=params,
        suites=suites,
        source=path,
        **texts,
    )


def _preset(checker: Checker, key: str, value: Any, presets: Sequence[str]) -> str:
    if value not in presets:
        raise checker.fail(key, value, f"a preset ({', '.join(presets)}){did_you_mean(str(value), presets)}")
    return value


def _noise(checker: Checker, key: str, raw: Any) -> tuple[float, float]:
    block = checker.mapping(key, raw)
    checker.keys(key, block, ("noise_rate",))
    rates = checker.mapping(f"{key}.noise_rate", block.get("noise_rate", {}))
    checker.keys(f"{key}.noise_rate", rates, ("min", "max"))
    low = checker.number(f"{key}.noise_rate.min", rates.get("min", 0.0), 0.0)
    high = checker.number(f"{key}.noise_rate.max", rates.get("max", 1.0), low)
    return low, high
