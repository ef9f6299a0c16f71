"""What every response model shares: strictness, references and timestamps."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class Out(BaseModel):
    """A response object: exactly the declared fields."""

    model_config = ConfigDict(extra="forbid")


class Ref(Out):
    """A reference to another object. `name` is null for objects without one (jobs, tokens) or
    when the object no longer exists."""

    id: str = Field(description="The object's id (never truncated).")
    name: str | None = Field(description="The object's name.")


Timestamp = Annotated[datetime, Field(description="ISO 8601 in UTC with a Z suffix.")]
