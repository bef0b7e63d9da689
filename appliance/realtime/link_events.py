"""What the supervisor tells its user about the link itself (beside the server's own events)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Connected:
    """A session is up. ``renewed``: it replaces one that expired or was closed between turns."""

    session_id: str
    renewed: bool = False
    replayed: int = 0
    output_rate: int | None = None


@dataclass(frozen=True, slots=True)
class Disconnected:
    """No session, and another attempt follows in ``retry_in_s``.

    ``turn_lost`` is true when audio, an answer or a tool call was in flight: that turn failed.
    ``between_turns``: the session ended by itself with nothing in flight (a server's session
    limit): no error, but until the next ``Connected`` a press cannot start a turn.
    """

    reason: str
    retry_in_s: float
    turn_lost: bool = False
    between_turns: bool = False


@dataclass(frozen=True, slots=True)
class AuthRejected:
    """The key was refused. Retries go on slowly (the owner may fix the key), never in a loop."""

    reason: str
    retry_in_s: float


@dataclass(frozen=True, slots=True)
class SetupRejected:
    """The server refused the session's settings (``session.update``). Retried slowly: a
    configuration (or a changed service) to fix, never a loop."""

    reason: str
    retry_in_s: float


LinkEvent = Connected | Disconnected | AuthRejected | SetupRejected
