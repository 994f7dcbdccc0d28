"""Argument types that range-check numeric options with the limits of the config field they
stand for, so `--limit 0` or `--bootstrap 0` is a usage error (exit 2), never a silent default."""

from __future__ import annotations

import argparse
from typing import Annotated

from pydantic import BaseModel, TypeAdapter, ValidationError


def config_field(model: type[BaseModel], name: str):
    """An argparse ``type`` that validates a value like ``model``'s field ``name``."""
    info = model.model_fields[name]
    adapter = TypeAdapter(Annotated[(info.annotation, *info.metadata)])

    def parse(text: str):
        try:
            return adapter.validate_python(text)
        except ValidationError as exc:
            raise argparse.ArgumentTypeError(f"{exc.errors()[0]['msg'].lower()} (got {text})") from None

    parse.__name__ = name  # argparse names the type in its messages
    return parse


def at_least(low: int):
    """An argparse ``type``: an integer >= ``low``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer (got {text})") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low} (got {text})")
        return value

    return parse
