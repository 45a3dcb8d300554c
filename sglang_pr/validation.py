"""One way to report bad settings: a :class:`ConfigError` whose message names the field.

Every pydantic model of the plugin (DeepConf, cascade, Medusa, the server limits) is validated
through :func:`parse_model`, and settings passed as JSON in an environment variable through
:func:`json_setting`, so an HTTP 400, a startup error and a CLI error all read the same way:
``deepconf.window: must be > 0``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Optional, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """Bad settings; ``str()`` is ``"<field>: <reason>"`` and ``.field`` the dotted field."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


def field_error(field: str, msg: str) -> ValueError:
    """For model-level validators: a ValueError that :func:`describe` attributes to ``field``."""
    return ValueError(f"{field}: {msg}")


def describe(err: ValidationError, prefix: str) -> ConfigError:
    """One readable line naming the first bad field, e.g. ``deepconf.window: must be > 0``."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first.get("loc", ()) if p != "__root__")
    msg = first.get("msg", "invalid value")
    if first.get("type") == "extra_forbidden":
        msg = "unknown field"
    if not loc and msg.startswith("Value error, ") and ":" in msg:
        loc, _, msg = msg[len("Value error, "):].partition(": ")  # from field_error
    msg = msg.removeprefix("Value error, ")
    field = ".".join(x for x in (prefix, loc) if x) or "config"
    return ConfigError(f"{field}: {msg}", field)


def parse_model(model: type[M], data: Any, prefix: str) -> M:
    """``model`` from a JSON object; raises :class:`ConfigError` naming the bad field."""
    if isinstance(data, model):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix}: must be an object", prefix)
    try:
        return model(**data)
    except ValidationError as err:
        raise describe(err, prefix) from None


def json_setting(var: str, environ: Optional[Mapping[str, str]] = None) -> dict[str, Any]:
    """The JSON object in environment variable ``var`` (``@path`` reads a file); {} when unset."""
    raw = (os.environ if environ is None else environ).get(var, "").strip()
    if not raw:
        return {}
    if raw.startswith("@"):
        try:
            raw = Path(raw[1:]).read_text()
        except OSError as e:
            raise ConfigError(f"{var}: cannot read {raw[1:]} ({e.strerror})", var) from None
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise ConfigError(f"{var}: not valid JSON ({e})", var) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{var}: must be a JSON object of settings", var)
    return data
