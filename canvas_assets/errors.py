"""The error taxonomy shared by every stage of the pipeline.

Every failure the pipeline raises on purpose is a `CanvasAssetsError` with a *category* (Canvas API,
transformation, configuration, timeout, validation), a *recoverable* flag (would trying again later
help?), the *stage* it happened in and, where known, the course. Assets turn these into Dagster
`Failure`s carrying the same fields as metadata, and only recoverable ones are retried.

Messages never contain the Canvas token: the HTTP layer redacts URLs and bodies before it builds one.
"""

from __future__ import annotations

from enum import Enum
from typing import Any


class ErrorCategory(str, Enum):
    CANVAS_API = "canvas_api"
    TRANSFORMATION = "transformation"
    CONFIGURATION = "configuration"
    TIMEOUT = "timeout"
    VALIDATION = "validation"


class CanvasAssetsError(Exception):
    """Base of every deliberate error: a message for people plus machine-readable fields."""

    category: ErrorCategory = ErrorCategory.CANVAS_API
    recoverable: bool = False

    def __init__(
        self,
        message: str,
        *,
        stage: str | None = None,
        course_id: str | int | None = None,
        recoverable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.stage = stage
        self.course_id = course_id
        if recoverable is not None:
            self.recoverable = recoverable

    @property
    def error_type(self) -> str:
        return type(self).__name__

    def to_metadata(self) -> dict[str, Any]:
        """Fields safe to show in Dagster metadata and the sync log (no token, no payloads)."""
        meta: dict[str, Any] = {
            "error_type": self.error_type,
            "error_category": self.category.value,
            "recoverable": self.recoverable,
            "message": self.message,
        }
        if self.stage:
            meta["stage"] = self.stage
        if self.course_id is not None:
            meta["course_id"] = str(self.course_id)
        return meta


# --- Canvas API -----------------------------------------------------------------------------------
class CanvasAPIError(CanvasAssetsError):
    """An HTTP exchange with Canvas failed. `status`, `method` and a token-free `url` say which."""

    category = ErrorCategory.CANVAS_API

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        method: str = "GET",
        url: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        self.status = status
        self.method = method
        self.url = url

    def to_metadata(self) -> dict[str, Any]:
        meta = super().to_metadata()
        if self.status is not None:
            meta["http_status"] = self.status
        meta["http_method"] = self.method
        if self.url:
            meta["url"] = self.url
        return meta


class CanvasAuthError(CanvasAPIError):
    """401 for a missing, invalid, revoked or expired token: nothing will change until the token does."""


class CanvasPermissionError(CanvasAPIError):
    """Authenticated but not allowed (Canvas answers 401 'unauthorized', or a 403 that is neither a throttle
    nor a refused request)."""


class CanvasNotFound(CanvasAPIError):
    """404: the course or object does not exist (or no longer does)."""


class CanvasBadRequest(CanvasAPIError):
    """400/422: Canvas rejected a parameter. A bug or a misconfiguration, never retried."""


class CanvasRequestRefused(CanvasBadRequest):
    """A 403 whose JSON error is not about permission (`{"error": "invalid assignment ids requested"}`):
    Canvas refused a request canvas-assets should not have made. A bug of ours, not the token's; never
    retried."""


class CanvasThrottled(CanvasAPIError):
    """429, or 403 with 'Rate Limit Exceeded': the token's bucket is full. Retried after a backoff."""

    recoverable = True


class CanvasServerError(CanvasAPIError):
    """5xx from Canvas. Usually passing; retried."""

    recoverable = True


class CanvasConnectionError(CanvasAPIError):
    """The connection failed or was dropped before a response arrived. Retried."""

    recoverable = True


class CanvasTimeout(CanvasAPIError):
    """A request, or a course's whole fetch, ran past its time limit. Retried."""

    category = ErrorCategory.TIMEOUT
    recoverable = True


# --- configuration ----------------------------------------------------------------------------------
class ConfigurationError(CanvasAssetsError):
    """Settings are missing or wrong (environment, profile, database URL). Fix the settings, then re-run."""

    category = ErrorCategory.CONFIGURATION


class ProfileError(ConfigurationError):
    """A sync profile is invalid. `field` is the dotted path of the offending field."""

    def __init__(self, message: str, *, field: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.field = field

    def to_metadata(self) -> dict[str, Any]:
        meta = super().to_metadata()
        if self.field:
            meta["field"] = self.field
        return meta


class SchemaOutOfDateError(ConfigurationError):
    """The warehouse schema is older than this code: run `canvas-assets db upgrade`."""


# --- data ---------------------------------------------------------------------------------------------
class TransformationError(CanvasAssetsError):
    """A transformer failed as a whole (not one bad record: those are quarantined)."""

    category = ErrorCategory.TRANSFORMATION


class RecordValidationError(CanvasAssetsError):
    """One record failed validation; it is quarantined with this message as the reason."""

    category = ErrorCategory.VALIDATION
