"""Reading the registry's YAML with a line number for every value, so that every
problem of ``openclaw config apply`` names its line (``routing.config``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from django.utils.translation import gettext as _

ENV_RE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*)|(\$))")
TOP_LEVEL_KEYS = {"models", "routing"}
PATH_TOKEN = re.compile(r"([A-Za-z_]+)|\[(\d+)\]")


class ConfigError(Exception):
    """The file was refused; ``problems`` lists (line, message), 1-based lines."""

    def __init__(self, source: str, problems: list[tuple[int, str]]):
        self.source = source
        self.problems = sorted(problems)
        super().__init__("\n".join(f"{source}:{line}: {msg}" for line, msg in self.problems))


@dataclass
class ApplyReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class Entry:
    line: int
    key_lines: dict[str, int]
    fields: dict[str, Any]
    nodes: dict[str, yaml.Node] = field(default_factory=dict)


def line_of(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def scalar(node: yaml.Node) -> Any:
    return yaml.SafeLoader("").construct_object(node, deep=True)


def expand(value: Any, line: int, environ: Mapping[str, str],
            problems: list[tuple[int, str]]) -> Any:
    if isinstance(value, str):
        def substitute(match: re.Match) -> str:
            if match.group(3):
                return "$"
            name = match.group(1) or match.group(2)
            if name not in environ:
                problems.append((line, _("environment variable %(name)s is not set")
                                 % {"name": name}))
                return ""
            return environ[name]

        return ENV_RE.sub(substitute, value)
    if isinstance(value, dict):
        return {k: expand(v, line, environ, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v, line, environ, problems) for v in value]
    return value


def parse(text: str, source: str) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        problem = _("not valid YAML: %(problem)s") % {"problem": getattr(exc, "problem", exc)}
        raise ConfigError(source, [(line, problem)]) from None


def sections(root: yaml.Node | None,
              problems: list[tuple[int, str]]) -> dict[str, list[yaml.Node]]:
    if root is None:
        problems.append((1, _("the file is empty; expected a `models:` list")))
        return {}
    if not isinstance(root, yaml.MappingNode):
        problems.append((line_of(root), _("expected a mapping with a `models:` list at the top")))
        return {}
    nodes: dict[str, list[yaml.Node]] = {key: [] for key in TOP_LEVEL_KEYS}
    for key_node, value_node in root.value:
        key = scalar(key_node)
        if key not in TOP_LEVEL_KEYS:
            problems.append((line_of(key_node), _("unknown top-level key %(key)r (allowed: "
                                                "%(allowed)s)") % {
                "key": key, "allowed": ", ".join(sorted(TOP_LEVEL_KEYS))}))
        elif not isinstance(value_node, yaml.SequenceNode):
            problems.append((line_of(value_node), _("`%(key)s` must be a list") % {"key": key}))
        else:
            nodes[key].extend(value_node.value)
    return nodes


def wrong_type(key: str, types: tuple[type, ...], value: Any) -> str:
    expected = {str: _("a string"), int: _("an integer"), bool: _("true or false"),
                dict: _("a mapping"), list: _("a list")}[types[0]]
    return _("%(key)s must be %(expected)s, not %(type)s") % {
        "key": key, "expected": expected, "type": type(value).__name__}


def node_at(node: yaml.Node, path: str) -> yaml.Node:
    """The YAML node a condition path (``all[1].value``) points at, or its deepest parent."""
    for name, index in PATH_TOKEN.findall(path if path != "condition" else ""):
        if name and isinstance(node, yaml.MappingNode):
            found = [v for k, v in node.value if scalar(k) == name]
            if not found:
                return node
            node = found[0]
        elif index and isinstance(node, yaml.SequenceNode) and int(index) < len(node.value):
            node = node.value[int(index)]
        else:
            return node
    return node
