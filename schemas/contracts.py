"""The versioned event contracts: JSON Schema files beside this module, compiled once.

The JSON files are the language-neutral source of truth; this module only loads and compiles
them (fastjsonschema generates a plain Python validator per schema).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import Any

import fastjsonschema


class Contract(enum.Enum):
    """One event contract: its schema file and the schema version it accepts."""

    SEARCH_IMPRESSION = ("search_impression", 1)
    USER_ACTION = ("user_action", 1)
    REWARD = ("reward", 1)
    MODEL_SNAPSHOT = ("model_snapshot", 1)
    DEAD_LETTER = ("dead_letter", 1)
    CATALOG_ENTITY = ("catalog_entity", 1)

    def __init__(self, stem: str, version: int) -> None:
        self.stem = stem
        self.version = version

    @property
    def filename(self) -> str:
        return f"{self.stem}.v{self.version}.json"


@cache
def schema(contract: Contract) -> dict[str, Any]:
    """The JSON Schema document of a contract."""
    text = resources.files(__package__).joinpath(contract.filename).read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@cache
def validator(contract: Contract) -> Callable[[Any], Any]:
    """A compiled validator that raises ``fastjsonschema.JsonSchemaValueException``."""
    return fastjsonschema.compile(schema(contract))
