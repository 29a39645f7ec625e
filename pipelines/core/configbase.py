"""Base class for every config section: strict (unknown keys fail) and self-documenting."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A config section. Every field must carry a `description` (a test checks it)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())
