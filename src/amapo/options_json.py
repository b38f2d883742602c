"""Options whose value is a JSON object (``--column_mapping``, ``--role_mapping``), from the command line or YAML."""

from __future__ import annotations

import json

from amapo.errors import UserError


def parse_json_mapping(option: str, value: str | dict | None, example: str) -> dict[str, str] | None:
    """``value`` (a JSON object of strings, as given on the command line or in YAML) as a dict, or None."""
    if value is None or isinstance(value, dict):
        parsed = value
    else:
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as err:
            raise UserError(f"--{option} must be a JSON object such as {example}: {err}") from None
    if parsed is not None and (
        not isinstance(parsed, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in parsed.items())
    ):
        raise UserError(f"--{option} must be a JSON object of strings such as {example}, got {value!r}")
    return parsed
