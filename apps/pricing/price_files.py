"""Price files in litellm's `model_prices_and_context_window.json` format: validation and comparison.

An operator carries a newer copy of litellm's file onto an offline machine and imports it
(`manage.py prices_import`). Before it can price anything it must read as litellm's own file
does: a JSON object of model entries, each an object whose prices are non-negative numbers (or
null), per token, per tier row (`tiered_pricing`) or per window (`off_peak_pricing`), with whole
token limits. Every problem found is reported, named by model and key, so one run shows them all.

Nothing here imports Django or litellm.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from apps.pricing.catalog import NON_MODEL_KEYS, is_token_priced

MAX_REPORTED_ERRORS = 20
_TOKEN_LIMIT_KEYS = ("max_input_tokens", "max_output_tokens", "max_tokens")
_TEXT_KEYS = ("litellm_provider", "mode")


class PriceFileError(ValueError):
    """A price file that cannot be used; `errors` lists each problem, named by model and key."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        shown = errors[:MAX_REPORTED_ERRORS]
        more = len(errors) - len(shown)
        super().__init__("\n".join(shown + ([f"... and {more} more"] if more else [])))


def price_file_parse(data: bytes) -> dict[str, Any]:
    """The file's model entries, checked; raises PriceFileError naming every problem."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise PriceFileError([f"not UTF-8 text: byte {error.start} cannot be decoded"]) from None
    try:
        document = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as error:
        raise PriceFileError([f"not valid JSON: {error.msg} at line {error.lineno} column {error.colno}"]) from None
    except ValueError as error:
        raise PriceFileError([f"not valid JSON: {error}"]) from None
    if not isinstance(document, dict):
        raise PriceFileError([f"expected a JSON object of models, got {_type_name(document)}"])
    errors: list[str] = []
    for model, entry in document.items():
        if model in NON_MODEL_KEYS:
            continue
        if not isinstance(entry, dict):
            errors.append(f"{model}: expected an object, got {_type_name(entry)}")
            continue
        _check_entry(model, entry, errors)
    if not errors and not priced_models(document):
        errors.append("no model has a per-token price (input_cost_per_token or tiered_pricing)")
    if errors:
        raise PriceFileError(errors)
    return document


def priced_models(entries: Mapping[str, object]) -> set[str]:
    """Keys of the entries priced per token (as the catalog decides: a flat or tiered input price)."""
    return {
        key for key, entry in entries.items()
        if key not in NON_MODEL_KEYS and isinstance(entry, Mapping) and is_token_priced(entry)
    }  # fmt: skip


def prices_of(entry: Mapping[str, object]) -> dict[str, object]:
    """The part of an entry that decides what a call costs: every price, tier table and window."""
    return {key: value for key, value in entry.items() if _is_price_key(key) or key in ("tiered_pricing",
                                                                                      "off_peak_pricing")}


def _is_price_key(key: str) -> bool:
    return "cost" in key


def _check_entry(model: str, entry: dict[str, object], errors: list[str]) -> None:
    for key, value in entry.items():
        where = f"{model}: {key}"
        if _is_price_key(key):
            _check_price(where, value, errors)
        elif key == "tiered_pricing":
            _check_tier_table(where, value, errors)
        elif key == "off_peak_pricing":
            if not isinstance(value, dict):
                errors.append(f"{where}: expected an object, got {_type_name(value)}")
                continue
            for block_key, block_value in value.items():
                if _is_price_key(block_key):
                    _check_price(f"{where}.{block_key}", block_value, errors)
        elif key in _TOKEN_LIMIT_KEYS:
            if value is not None and not (_is_number(value) and value >= 0 and float(value).is_integer()):
                errors.append(f"{where}: expected a whole number of tokens >= 0 or null, got {_shown(value)}")
        elif key in _TEXT_KEYS and not isinstance(value, str):
            errors.append(f"{where}: expected a string, got {_type_name(value)}")


def _check_price(where: str, value: object, errors: list[str]) -> None:
    """A price is a number >= 0 or null; a few are objects of such numbers (per search size, per unit)."""
    if value is None:
        return
    if isinstance(value, dict):
        for name, inner in value.items():
            _check_price(f"{where}.{name}", inner, errors)
    elif not _is_number(value):
        errors.append(f"{where}: expected a price (a number >= 0) or null, got {_shown(value)}")
    elif value < 0:
        errors.append(f"{where}: negative price {value!r}")


def _check_tier_table(where: str, value: object, errors: list[str]) -> None:
    if not isinstance(value, list):
        errors.append(f"{where}: expected a list of tiers, got {_type_name(value)}")
        return
    for index, row in enumerate(value):
        at = f"{where}[{index}]"
        if not isinstance(row, dict):
            errors.append(f"{at}: expected an object, got {_type_name(row)}")
            continue
        for key, value in row.items():
            if _is_price_key(key):
                _check_price(f"{at}.{key}", value, errors)
            elif key.endswith("range") and not (  # `range` of input tokens; search tools' `max_results_range`
                isinstance(value, list) and len(value) == 2 and all(_is_number(b) and b >= 0 for b in value)
            ):
                errors.append(f"{at}.{key}: expected [start, end] counts >= 0, got {_shown(value)}")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def _type_name(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}.get(
        type(value), "a number"
    )


def _shown(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."
