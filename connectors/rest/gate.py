"""The error-ratio gate of a share pipe (DIL's ``InFlowValidationConverter`` threshold, applied
while sending instead of after the fact): once ``min_attempts`` sends were made in a run and
rejected / attempted passes ``max_error_ratio``, the gate closes: no new send starts, the sends in
flight finish (their outcomes are recorded) and the run fails with
:class:`~runtime.errors.ErrorRatioError`. DIL's defaults: 10 % after 20 attempts.
"""

from __future__ import annotations

from dataclasses import dataclass

from runtime.errors import ErrorRatioError


@dataclass
class ErrorGate:
    """Counts one run's sends.

    Attributes:
        max_ratio: the largest rejected / attempted ratio tolerated (0..1).
        min_attempts: sends before the ratio is evaluated.
        pipe: the pipe ``_id`` (for the error).
    """

    max_ratio: float
    min_attempts: int
    pipe: str
    attempted: int = 0
    rejected: int = 0
    closed: bool = False

    def count(self, rejected: bool) -> None:
        """Count one send's final outcome; closes the gate when the ratio is passed."""
        self.attempted += 1
        self.rejected += rejected
        if self.attempted >= self.min_attempts and self.rejected > self.max_ratio * self.attempted:
            self.closed = True

    def check(self) -> None:
        """Raise when the gate is closed.

        Raises:
            ErrorRatioError: rejected / attempted passed ``max_error_ratio``.
        """
        if self.closed:
            raise ErrorRatioError(
                f"{self.rejected} of {self.attempted} sends were rejected, more than max_error_ratio "
                f"{self.max_ratio:g} (evaluated after min_attempts {self.min_attempts}); nothing more was "
                "sent. The response dataset names every rejection; fix the data or the target, then run again",
                pipe=self.pipe)
