"""The box's small persistent state (``tools.state_file``): today only the volume set by voice.

Why a file of its own and not config.yaml: the config is the owner's, read-only to the service
(systemd ``ProtectSystem``); the state lives under the service's ``StateDirectory``. Why atomic
writes (temp file, fsync, rename): a box is unplugged at any moment, and a half-written file
would lose the volume, not just the last change. Why failures are only logged: a read-only card
must not stop "louder" from working now, only from lasting.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from appliance.config import Config

log = logging.getLogger("appliance.tools")


class StateFile:
    """Reads and writes the state file; every failure is logged (a write failure once)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._write_failed = False

    def load(self) -> dict[str, Any]:
        """The saved state; ``{}`` when there is none or it cannot be read."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("cannot read the state file %s (%s); ignoring it", self.path, exc)
            return {}
        if not isinstance(data, dict):
            log.warning("the state file %s is not a JSON object; ignoring it", self.path)
            return {}
        return data

    def volume(self) -> float | None:
        """The saved volume (0..1), or None when none was saved (or it makes no sense)."""
        value = self.load().get("volume")
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return min(1.0, max(0.0, float(value)))

    def save_volume(self, volume: float) -> bool:
        """Keep ``volume`` across restarts; False (and one log line) if it cannot be written."""
        return self.update(volume=round(float(volume), 3))

    def update(self, **values: Any) -> bool:
        state = {**self.load(), **values}
        try:
            self._write(json.dumps(state, ensure_ascii=False, indent=1) + "\n")
        except OSError as exc:
            level = logging.DEBUG if self._write_failed else logging.WARNING
            log.log(
                level,
                "cannot write the state file %s (%s); the volume applies but is not kept "
                "across restarts",
                self.path,
                exc,
            )
            self._write_failed = True
            return False
        if self._write_failed:
            log.info("the state file %s is writable again", self.path)
            self._write_failed = False
        return True

    def _write(self, text: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".state-", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def state_file(config: Config) -> StateFile:
    """The configured state file; a relative ``tools.state_file`` is relative to the config
    file, like every other path in it."""
    path = Path(config.tools.state_file)
    return StateFile(path if path.is_absolute() else config.path.parent / path)
