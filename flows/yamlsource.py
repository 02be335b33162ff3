"""YAML that remembers where every value came from.

Zap errors must name ``file:line:column``; pydantic reports a field path. This module parses a
document into plain Python data *and* a map from each field path to the line and column of its
key and its value, so an error at ``steps[1].input.text`` points at the right place in the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

Path = tuple[Any, ...]


@dataclass(frozen=True)
class Position:
    line: int
    column: int


@dataclass
class SourceMap:
    """Positions of keys and values, by field path; 1-based lines and columns."""

    values: dict[Path, Position] = field(default_factory=dict)
    keys: dict[Path, Position] = field(default_factory=dict)

    def value(self, path: Path) -> Position:
        """The value at ``path``, or the nearest enclosing one that exists."""
        return self._nearest(self.values, path)

    def key(self, path: Path) -> Position:
        """The key naming ``path`` (for unknown fields), else the nearest value."""
        return self.keys.get(tuple(path)) or self.value(path)

    @staticmethod
    def _nearest(table: dict[Path, Position], path: Path) -> Position:
        path = tuple(path)
        while path and path not in table:
            path = path[:-1]
        return table.get(path, Position(1, 1))


class YamlProblem(Exception):
    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(message)
        self.message, self.line, self.column = message, line, column


def _pos(node: yaml.Node) -> Position:
    return Position(node.start_mark.line + 1, node.start_mark.column + 1)


class _Builder:
    def __init__(self) -> None:
        self.map = SourceMap()
        self.constructor = yaml.SafeLoader("")

    def build(self, node: yaml.Node, path: Path) -> Any:
        self.map.values[path] = _pos(node)
        if isinstance(node, yaml.MappingNode):
            self.constructor.flatten_mapping(node)  # resolves `<<:` merge keys
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self.constructor.construct_object(key_node, deep=True)
                if not isinstance(key, str | int | float | bool) and key is not None:
                    raise YamlProblem("a mapping key must be a plain value", *_unpack(key_node))
                if key in result:
                    raise YamlProblem(f"duplicate key {key!r}", *_unpack(key_node))
                child = (*path, key)
                self.map.keys[child] = _pos(key_node)
                result[key] = self.build(value_node, child)
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        return self.constructor.construct_object(node, deep=True)


def _unpack(node: yaml.Node) -> tuple[int, int]:
    pos = _pos(node)
    return pos.line, pos.column


def load(text: str) -> tuple[Any, SourceMap]:
    """Parse one YAML document; raise ``YamlProblem`` with a position if it is not valid YAML."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = " ".join(filter(None, [exc.context, exc.problem]))
        raise YamlProblem(f"YAML syntax error: {message}", line, column) from None
    except yaml.YAMLError as exc:
        raise YamlProblem(f"YAML error: {exc}", 1, 1) from None
    if root is None:
        return None, SourceMap()
    builder = _Builder()
    return builder.build(root, ()), builder.map
