"""Refusals: every request the API declines is answered as {"detail": reason, "request_id": id} with a 4xx/5xx
status, and counted by a short reason label (metrics, access log)."""
from __future__ import annotations

import json

# Statuses after which the rest of the body is not worth reading: the connection is closed. After any other
# refusal uvicorn reads and discards the body (at most the size limit, within the head deadline of the next
# request) and keeps the connection, so a client still sending gets its answer instead of a reset.
CLOSE_AFTER = {408, 413}


class Refusal(Exception):
    def __init__(self, status: int, reason: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.retry_after_s = retry_after_s

    @property
    def message(self) -> str:
        return str(self)

    def headers(self) -> dict[str, str]:
        headers = {}
        if self.retry_after_s is not None:
            headers["retry-after"] = str(max(1, round(self.retry_after_s + 0.499)))
        if self.status in CLOSE_AFTER:
            headers["connection"] = "close"
        if self.status == 401:
            headers["www-authenticate"] = 'ApiKey header="X-API-Key"'
        return headers

    def body(self, request_id: str) -> bytes:
        return json.dumps({"detail": self.message, "request_id": request_id}).encode("utf-8")
