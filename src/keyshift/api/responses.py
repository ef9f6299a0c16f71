"""The API's JSON response: the same timestamp format as the CLI (ISO 8601 UTC with Z)."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from keyshift.timefmt import normalize_times


class KeyshiftJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return super().render(normalize_times(content))
