"""The YAML reader of suites and ``--set`` values: PyYAML's safe loader with limits no suite comes near.

PyYAML's ``safe_load`` alone accepts three things a suite must not be:

- duplicate keys in a mapping, silently keeping the last (``epochs: 1`` ... ``epochs: 50``);
- nesting thousands of levels deep: its composer recurses once per level, so 50,000 ``[`` end in a
  ``RecursionError`` (and a merely deep value would later exhaust ``repr``, ``deepcopy`` or ``json``);
- a "billion laughs": anchors and aliases that expand exponentially. PyYAML shares the aliased objects,
  so loading is cheap, but anything that walks the value (an error message's ``repr``, the run id's
  JSON) expands it and runs for hours in gigabytes.

It also turns the ``ValueError`` of a scalar PyYAML cannot build (an integer of 5,000 digits, the date
``2024-02-30``) into a YAML error at that value's line.

``SuiteLoader`` refuses all three while it composes the node graph, before anything is built from it:
a duplicate key names the key and both lines; nesting is counted before each level is entered; and
every node's size and depth as if each alias were written out are tallied bottom-up, so an alias costs
the size of what it stands for. Each refusal is a ``yaml.MarkedYAMLError`` with the line and column.
"""

from __future__ import annotations

from typing import Any

import yaml

from harness.errors import short_repr

MAX_BYTES = 1 << 20  # the suites in suites/ are 1-3 KB; a generated 20,000-run suite 120 KB
MAX_DEPTH = 64  # of the value with every alias written out; the suites in suites/ need 4
MAX_ALIASED = 10_000  # values that aliases add, all together; reusing a small block a few times needs dozens
_MERGE = "tag:yaml.org,2002:merge"


class LimitError(yaml.MarkedYAMLError):
    """The document is over one of the limits above (too large, too deep, or aliases expand too far)."""


class DuplicateKeyError(yaml.MarkedYAMLError):
    """A mapping repeats a key (YAML requires unique keys; PyYAML would keep the last silently)."""


class SuiteLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate keys, deep nesting and alias expansion past the limits."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliased = 0
        self._expanded: dict[int, tuple[int, int]] = {}  # id(node) -> (values, depth) with aliases written out

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            node = super().compose_node(parent, index)
            if id(node) not in self._expanded:  # still being composed: the alias is inside its own anchor
                raise LimitError(
                    None, None, f"alias *{event.anchor} refers to a value that contains it", event.start_mark
                )
            self._aliased += self._expanded[id(node)][0]
            if self._aliased > MAX_ALIASED:
                raise LimitError(
                    None,
                    None,
                    f"aliases (*name) expand to more than {MAX_ALIASED:,} values (a YAML bomb?); expected a suite that "
                    "reuses a few small blocks at most, or the values written out",
                    event.start_mark,
                )
            return node
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise LimitError(None, None, f"nesting deeper than {MAX_DEPTH} levels; expected a suite", event.start_mark)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        self._expanded[id(node)] = self._measure(node, event.start_mark)
        return node

    def _measure(self, node: yaml.Node, mark: yaml.Mark) -> tuple[int, int]:
        """``(values, depth)`` of ``node`` with every alias below it written out, from its children's."""
        if isinstance(node, yaml.ScalarNode):
            return 1, 0
        children = [part for pair in node.value for part in pair] if isinstance(node, yaml.MappingNode) else node.value
        sizes = [self._expanded[id(child)] for child in children]
        values, depth = 1 + sum(size for size, _ in sizes), 1 + max((d for _, d in sizes), default=0)
        if depth > MAX_DEPTH:
            raise LimitError(
                None, None, f"aliases nest this value deeper than {MAX_DEPTH} levels; expected a suite", mark
            )
        return values, depth

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """PyYAML builds scalars with ``int()`` and ``datetime()``, whose errors are no ``YAMLError``:
        ``epochs: <5,000 digits>`` (Python's integer-string limit) or ``description: 2024-02-30`` raised a
        ``ValueError`` traceback. They become a ``yaml.constructor.ConstructorError`` at the value's line."""
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as error:
            raise yaml.constructor.ConstructorError(
                None, None, f"the value cannot be read: {short_repr(str(error))}", node.start_mark
            ) from error

    def compose_mapping_node(self, anchor: str | None) -> yaml.MappingNode:
        node = super().compose_mapping_node(anchor)
        first_of: dict[tuple[str, str], yaml.Node] = {}
        for key, _ in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE:
                continue
            first = first_of.setdefault((key.tag, key.value), key)
            if first is not key:
                raise DuplicateKeyError(
                    None,
                    None,
                    f"duplicate key {short_repr(key.value)} (first at line {first.start_mark.line + 1}, again at "
                    f"line {key.start_mark.line + 1}); expected each key once",
                    key.start_mark,
                )
        return node


def load(text: str) -> Any:
    """The one YAML document in ``text``, read with ``SuiteLoader``. Raises ``yaml.YAMLError``."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        raise LimitError(None, None, f"{size:,} bytes; expected a suite of at most {MAX_BYTES:,} bytes", None)
    return yaml.load(text, Loader=SuiteLoader)  # noqa: S506 (SuiteLoader is a SafeLoader)
