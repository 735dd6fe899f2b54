"""Finding plugins: the built-ins, the ``openclaw.plugins`` entry-point group and the
plugin folders (``settings.OPENCLAW_PLUGIN_DIRS``: each ``*.py`` file or package in a
folder), each class validated when loaded. A plugin that fails to import or to
validate becomes a ``Problem`` (shown in the admin) and is skipped; discovery itself
never raises.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import sys
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
from django.conf import settings
from django.utils.module_loading import import_string
from django.utils.translation import gettext as _

from .base import PluginBase
from .builtins import BUILTINS

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "openclaw.plugins"


@dataclass(frozen=True)
class Problem:
    """A plugin that could not be used: where it came from and why."""

    source: str
    message: str
    name: str = ""

    def __str__(self) -> str:
        return f"{self.name or self.source}: {self.message}"


@dataclass
class Discovery:
    """The usable plugin classes by name, where each came from, and what was skipped."""

    plugins: dict[str, type[PluginBase]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def add(self, cls: Any, source: str, expected_name: str = "") -> None:
        problems = class_problems(cls)
        if not problems and expected_name and cls.name != expected_name:
            problems = [_("the entry point is named “%(entry)s” but the plugin calls itself "
                          "“%(name)s”") % {"entry": expected_name, "name": cls.name}]
        name = getattr(cls, "name", "") if isinstance(getattr(cls, "name", ""), str) else ""
        if problems:
            self.problems += [Problem(source, message, expected_name or name)
                              for message in problems]
        elif self.plugins.get(name, cls) is not cls:
            self.problems.append(Problem(source, _("another plugin already has this name (from "
                                                   "%(other)s); skipped")
                                         % {"other": self.sources[name]}, name))
        elif name not in self.plugins:
            self.plugins[name] = cls
            self.sources[name] = source


# --- validation -------------------------------------------------------------------------


def class_problems(cls: Any) -> list[str]:
    """Why ``cls`` cannot be used as a plugin (empty when it can)."""
    if not isinstance(cls, type) or not issubclass(cls, PluginBase) or cls is PluginBase:
        return [_("%(object)r is not a subclass of plugins.base.PluginBase") % {"object": cls}]
    problems = []
    if not isinstance(cls.name, str) or not cls.name.strip():
        problems.append(_("the plugin has no name"))
    if not isinstance(cls.version, str) or not cls.version.strip():
        problems.append(_("the plugin has no version"))
    schema = cls.config_schema
    if not isinstance(schema, dict):
        return [*problems, _("its config schema must be a dict (a JSON schema object)")]
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        return [*problems, _("its config schema is not a valid JSON schema: %(error)s")
                % {"error": exc.message}]
    if schema.get("type") != "object":
        problems.append(_("its config schema must describe an object (\"type\": \"object\")"))
    elif not isinstance(cls.defaults, dict):
        problems.append(_("its defaults must be a dict"))
    else:
        problems += [_("its defaults do not fit its schema: %(path)s: %(error)s")
                     % {"path": path, "error": message}
                     for path, message in schema_problems(schema, cls.defaults)]
    return problems


def schema_problems(schema: dict, config: Any) -> list[tuple[str, str]]:
    """Every way ``config`` breaks ``schema``, as ``(path, message)``, path-sorted."""
    validator = jsonschema.Draft202012Validator(schema)
    found = [(_error_path(error), _error_message(error)) for error in validator.iter_errors(config)]
    return sorted(found)


def config_problems(cls: type[PluginBase], config: Any) -> list[tuple[str, str]]:
    """The problems of a row's ``config`` for ``cls`` (defaults filled in first)."""
    if not isinstance(config, dict):
        return [("", _("The configuration must be a JSON object."))]
    merged = {**cls.defaults, **config}
    problems = schema_problems(cls.config_schema, merged)
    if not problems:
        try:
            problems = list(cls.check_config(merged))
        except Exception as exc:  # a plugin's own check is plugin code: never fatal
            logger.exception("check_config of plugin %s raised", cls.name)
            problems = [("", _("The plugin could not check this configuration: %(error)s")
                         % {"error": exc})]
    return problems


def _error_path(error: jsonschema.ValidationError) -> str:
    path = ""
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    if error.validator == "required":  # reported on the object; name the missing key
        missing = error.message.split("'")[1] if "'" in error.message else ""
        path = f"{path}.{missing}" if path and missing else (missing or path)
    return path


def _error_message(error: jsonschema.ValidationError) -> str:
    """A translated message for the common checks; jsonschema's own for the rest."""
    value, expected = error.instance, error.validator_value
    messages = {
        "required": lambda: _("This key is required."),
        "type": lambda: _("Must be of type %(type)s (got %(value)s).")
        % {"type": " or ".join(expected) if isinstance(expected, list) else expected,
           "value": _shown(value)},
        "enum": lambda: _("Must be one of: %(choices)s.")
        % {"choices": ", ".join(_shown(c) for c in expected)},
        "additionalProperties": lambda: _("Unknown keys: %(keys)s.")
        % {"keys": ", ".join(sorted(set(value) - set(error.schema.get("properties", {}))))},
        "minimum": lambda: _("Must be at least %(n)s.") % {"n": expected},
        "maximum": lambda: _("Must be at most %(n)s.") % {"n": expected},
        "minLength": lambda: _("Must be at least %(n)s characters long.") % {"n": expected},
        "maxLength": lambda: _("Must be at most %(n)s characters long.") % {"n": expected},
        "minItems": lambda: _("Needs at least %(n)s items.") % {"n": expected},
        "maxItems": lambda: _("Takes at most %(n)s items.") % {"n": expected},
        "uniqueItems": lambda: _("Items must not repeat."),
    }
    maker = messages.get(error.validator)
    return str(maker()) if maker else error.message


def _shown(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else f"“{value}”"
    return text if len(text) <= 60 else text[:57] + "…"


# --- discovery ----------------------------------------------------------------------------


def discover() -> Discovery:
    """Every plugin this process can load: built-ins, entry points, then folders (the
    first of two different plugins with one name wins; the other is a problem)."""
    found = Discovery()
    for cls in BUILTINS:
        found.add(cls, f"built-in {cls.__module__}.{cls.__qualname__}")
    _discover_entry_points(found)
    for folder in getattr(settings, "OPENCLAW_PLUGIN_DIRS", []):
        _discover_folder(Path(folder), found)
    for problem in found.problems:
        logger.warning("plugin skipped: %s (%s)", problem, problem.source)
    return found


def _discover_entry_points(found: Discovery) -> None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep.dist, "name", "") or "?"
        source = _("entry point %(name)s = %(value)s (%(dist)s)") % {
            "name": ep.name, "value": ep.value, "dist": dist}
        try:
            cls = ep.load()
        except Exception as exc:  # a broken package must not break the server
            found.problems.append(Problem(source, _("could not be loaded: %(error)s")
                                          % {"error": _exception_text(exc)}, ep.name))
            continue
        found.add(cls, source, expected_name=ep.name)


def _discover_folder(folder: Path, found: Discovery) -> None:
    if not folder.is_dir():
        logger.debug("plugin folder %s does not exist", folder)
        return
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith((".", "_")):
            continue
        if entry.is_file() and entry.suffix == ".py":
            init = entry
        elif entry.is_dir() and (entry / "__init__.py").is_file():
            init = entry / "__init__.py"
        else:
            continue
        source = _("plugin folder %(path)s") % {"path": entry}
        try:
            module = _load_folder_module(entry, init)
        except Exception as exc:  # a broken file must not break the server
            found.problems.append(Problem(source, _("could not be imported: %(error)s")
                                          % {"error": _exception_text(exc)}, entry.stem))
            continue
        classes = _plugin_classes(module)
        if not classes:
            found.problems.append(Problem(source, _("defines no subclass of "
                                                    "plugins.base.PluginBase"), entry.stem))
        for cls in classes:
            found.add(cls, source)


_folder_modules: dict[Path, tuple[int, ModuleType]] = {}


def _load_folder_module(entry: Path, init: Path) -> ModuleType:
    """Import a folder plugin, again only when one of its files changed."""
    files = [init] if entry.is_file() else list(entry.rglob("*.py"))
    stamp = max(f.stat().st_mtime_ns for f in files)
    cached = _folder_modules.get(entry)
    if cached and cached[0] == stamp:
        return cached[1]
    digest = hashlib.sha1(str(entry.parent).encode()).hexdigest()[:8]
    module_name = f"openclaw_folder_plugin_{digest}_{entry.stem}"
    locations = [str(entry)] if entry.is_dir() else None
    spec = importlib.util.spec_from_file_location(module_name, init,
                                                  submodule_search_locations=locations)
    assert spec is not None and spec.loader is not None  # a .py file always has a loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # before exec: dataclasses and relative imports need it
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    _folder_modules[entry] = (stamp, module)
    return module


def _plugin_classes(module: ModuleType) -> list[type[PluginBase]]:
    """The plugin classes a folder module defines (imported base classes excluded)."""
    own = module.__name__
    return [value for value in vars(module).values()
            if isinstance(value, type) and issubclass(value, PluginBase)
            and value is not PluginBase
            and (value.__module__ == own or value.__module__.startswith(own + "."))]


def _exception_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


# --- one name -------------------------------------------------------------------------------


def resolve(name: str, found: Discovery) -> type[PluginBase]:
    """The class a ``Plugin`` row names: a discovered name or a dotted path
    (``package.module.Class``). Raises ``LookupError`` with the reason."""
    if name in found.plugins:
        return found.plugins[name]
    skipped = [p.message for p in found.problems if p.name == name]
    if skipped:
        raise LookupError("; ".join(skipped))
    if "." not in name:
        raise LookupError(_("no plugin is named “%(name)s” (available: %(names)s)")
                          % {"name": name, "names": ", ".join(sorted(found.plugins)) or "—"})
    try:
        cls = import_string(name)
    except ImportError as exc:
        raise LookupError(_("cannot import %(path)s: %(error)s")
                          % {"path": name, "error": exc}) from None
    except Exception as exc:
        raise LookupError(_("importing %(path)s failed: %(error)s")
                          % {"path": name, "error": _exception_text(exc)}) from None
    problems = class_problems(cls)
    if problems:
        raise LookupError("; ".join(problems))
    return cls


def row_problems(name: str, config: object, found: Discovery | None = None
                 ) -> dict[str, list[str]]:
    """Why a row naming ``name`` with ``config`` would not load, by form field; each
    config problem starts with its path in the config (``words[2]: …``)."""
    found = found or discover()
    try:
        cls = resolve(name, found)
    except LookupError as exc:
        return {"name": [str(exc)]}
    problems = config_problems(cls, config)
    if problems:
        return {"config": [f"{path}: {message}" if path else message
                           for path, message in problems]}
    return {}
