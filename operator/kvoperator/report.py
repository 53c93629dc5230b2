"""What one reconcile pass found and did; the status step turns it into conditions."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Report:
    """The findings of one pass, in the order the steps made them: the first progress and the
    first problem become the Progressing and Degraded conditions."""

    progressing: list[tuple[str, str]] = field(default_factory=list)
    degraded: list[tuple[str, str]] = field(default_factory=list)
    operation: str = ""
    restore_pending: bool = False
    writes: list[str] = field(default_factory=list)

    def progress(self, reason: str, message: str) -> None:
        self.progressing.append((reason, message))

    def degrade(self, reason: str, message: str) -> None:
        self.degraded.append((reason, message))

    def wrote(self, what: str) -> None:
        self.writes.append(what)
