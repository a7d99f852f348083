"""What every spec model shares: the camelCase aliases of the Kubernetes resources, no unknown
fields, and the error type that names the resource and the field."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class SpecError(ValueError):
    """A resource is invalid; the message names the resource and the field."""


class SpecModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, mode="json", exclude_none=True)
