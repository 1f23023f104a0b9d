"""ClientError: a request the service refuses, as its status and one JSON line."""
from __future__ import annotations

from fastapi.responses import JSONResponse


class ClientError(Exception):
    """A refusal: its status, one line and any headers (Retry-After, WWW-Authenticate)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.headers = status, headers or {}

    def response(self) -> JSONResponse:
        """The one JSON line a refusal is."""
        return JSONResponse({'error': str(self)}, status_code=self.status, headers=self.headers)
