"""YAML read with limits: a config is small, has no duplicate keys, and its aliases cannot expand it.

`yaml.safe_load` builds only plain data, but a "billion laughs" file (aliases of aliases) becomes a
structure that is small in memory and astronomically large when walked: our checks and error messages
would walk it. Here the document's node graph is sized before anything is built (shared nodes counted
each time they are used), and a file over `MAX_BYTES` is refused before it is parsed.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_BYTES = 1 << 20  # a run config or sweep file is a few KB
MAX_VALUES = 100_000  # scalars, lists and mappings after aliases are expanded
MAX_DEPTH = 32  # a config nests 2-4 levels; deeper documents would exhaust the code that walks them


class YamlLimitError(ValueError):
    """The text breaks one of the limits (size, expansion, duplicate keys, nesting); the message says which."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key repeated in one mapping (YAML forbids it; PyYAML keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {_short(key)} (first on line {seen[key]})", key_node.start_mark)
                seen[key] = key_node.start_mark.line + 1
            except TypeError:  # an unhashable key: SafeLoader's own error follows
                break
        return super().construct_mapping(node, deep)


def load_limited(text: str) -> Any:
    """`text` as YAML data (safe types only) within the limits; YamlLimitError or yaml.YAMLError else."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise YamlLimitError(f"larger than {MAX_BYTES // 1024} KiB; a config is a few KB")
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, {}, set(), 0)
        return loader.construct_document(node)
    except RecursionError:
        raise YamlLimitError(f"nested deeper than {MAX_DEPTH} levels") from None
    finally:
        loader.dispose()


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int], depth: int) -> int:
    """How many values the node stands for once its aliases are expanded (each shared node sized once)."""
    if depth > MAX_DEPTH:
        raise YamlLimitError(f"nested deeper than {MAX_DEPTH} levels")
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        raise YamlLimitError("an alias refers to a value that contains it (a recursive structure)")
    open_nodes.add(key)
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [item for pair in node.value for item in pair]
    else:
        children = []
    size = 1 + sum(_expanded_size(child, sizes, open_nodes, depth + 1) for child in children)
    open_nodes.discard(key)
    if size > MAX_VALUES:
        raise YamlLimitError(f"its aliases expand to more than {MAX_VALUES:,} values; a config is a few hundred")
    sizes[key] = size
    return size


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
