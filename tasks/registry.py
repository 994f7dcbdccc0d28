"""The task registry: one YAML definition per task in ``tasks/definitions/``.

Adding a dataset is adding a file; the file name (without ``.yaml``) is the task name.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import yaml
from pydantic import ValidationError

from tasks.errors import DataError
from tasks.types import FIELD_ROLES, TaskDefinition

DEFINITIONS = Path(__file__).parent / "definitions"


@cache
def _registry() -> dict[str, TaskDefinition]:
    registry = {}
    for path in sorted(DEFINITIONS.glob("*.yaml")):
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        try:
            definition = TaskDefinition.model_validate({"name": path.stem, **raw})
        except ValidationError as exc:
            raise DataError(f"{path}: invalid task definition: {exc}") from None
        missing = [role for role in ("id", "document") if not definition.fields.get(role)]
        unknown = sorted(set(definition.fields) - set(FIELD_ROLES))
        if missing or unknown:
            raise DataError(f"{path}: fields: needs {missing} and knows only {list(FIELD_ROLES)} "
                            f"(unknown: {unknown})")
        registry[definition.name] = definition
    return registry


def list_tasks() -> list[str]:
    return sorted(_registry())


def get_task(name: str) -> TaskDefinition:
    try:
        return _registry()[name]
    except KeyError:
        raise DataError(f"unknown task '{name}'; known tasks: {', '.join(list_tasks())}") from None
