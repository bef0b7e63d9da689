"""Which sound device to use: listing PortAudio's devices and picking one from the config.

The config names a device as ``default`` (PortAudio's default of that kind), a PortAudio index
(``"2"``), or part of its name, case-insensitive (``"usb"``); see :func:`find_device`. A device
that is not there raises :class:`DeviceNotFound` with one line naming what was asked and what
there is, so the log says what to put in config.yaml.

PortAudio enumerates devices once, when it is initialised (``PyAudio()``); a device plugged in
later is seen only by a new initialisation, and only once every PyAudio instance in the process
has been terminated (``Pa_Initialize`` is reference counted). :func:`open_pyaudio` creates the
instance with libjack's "Cannot connect to server socket" lines kept off stderr (PortAudio is
linked with JACK and every initialisation tries to reach a JACK server that is not there),
and ALSA's probing chatter sent to the log at debug level; see :func:`quiet_stderr`.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["input", "output"]

STANDARD_RATES = (16000, 22050, 24000, 32000, 44100, 48000)

# What libjack prints when PortAudio's JACK host API looks for a server: dropped. No JACK server
# runs on the box, so that host API never comes up and the ALSA one is used. The first three:
# no server. The last three: under the unit (SystemCallFilter=~@resources makes
# sched_setscheduler fail with EPERM) libjack cannot even start its message thread, before it
# looks for a server (tests/vm/ found them in the journal at every start).
_JACK_NOISE = (
    "Cannot connect to server",
    "jack server is not running",
    "JackShmReadWritePtr",
    "Cannot create thread res = ",
    "JackMessageBuffer::Create cannot start thread",
    "Cannot create message buffer",
)
# ALSA's and PortAudio's own diagnostics: logged at debug level.
_LIBRARY_CHATTER = ("ALSA lib ", "Expression '")
_STDERR_LOCK = threading.Lock()
# PortAudio is one library per process and not thread-safe: initialising, terminating, opening,
# starting, stopping and closing streams must not run in two threads at once (the capture and
# playback workers did, and the VM's device-loss test saw the daemon abort). Every such call,
# from any module, holds this lock; it is re-entrant so helpers may nest.
PORTAUDIO_LOCK = threading.RLock()

log = logging.getLogger(__name__)


class AudioDeviceError(Exception):
    """A sound device problem; ``str(e)`` is one line for the log or the terminal."""


class DeviceNotFound(AudioDeviceError):
    """No device matches the configured spec."""


@dataclass(frozen=True)
class DeviceInfo:
    index: int
    name: str
    max_input_channels: int
    max_output_channels: int
    default_rate: int
    input_rates: tuple[int, ...] = ()  # among STANDARD_RATES, mono int16
    output_rates: tuple[int, ...] = ()
    is_default_input: bool = False
    is_default_output: bool = False

    def channels(self, kind: Kind) -> int:
        return self.max_input_channels if kind == "input" else self.max_output_channels

    def rates(self, kind: Kind) -> tuple[int, ...]:
        return self.input_rates if kind == "input" else self.output_rates


_LEFTOVER_PREFIX = "appliance-stderr."
_leftovers_checked = False


def _leftover_dir() -> str | None:
    """Where fd 2's file lives while PortAudio runs, so that it outlives an abort: the
    service's state directory, else the user's runtime directory; None: neither (a plain
    temporary file, lost with the process)."""
    for var in ("STATE_DIRECTORY", "XDG_RUNTIME_DIR"):
        path = os.environ.get(var, "").split(":")[0]
        if path and os.path.isdir(path) and os.access(path, os.W_OK):
            return path
    return None


def _open_capture_file(directory: str | None) -> tuple[int, str | None]:
    """(fd, path) of the file fd 2 points at meanwhile; path None for an anonymous one."""
    if directory is not None:
        path = os.path.join(directory, f"{_LEFTOVER_PREFIX}{os.getpid()}")
        flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        with contextlib.suppress(OSError):
            return os.open(path, flags, 0o600), path
    with tempfile.TemporaryFile() as tmp:
        return os.dup(tmp.fileno()), None  # the dup keeps it open after tmp is closed


def _forward_leftovers(directory: str | None) -> None:
    """What an earlier process wrote to stderr while PortAudio ran, when it never got to sort
    it: it ended there (alsa-lib's and PortAudio's asserts abort the process). Written to
    stderr now (the journal under the service), with the process's id; then removed."""
    if directory is None:
        return
    with contextlib.suppress(OSError):
        names = [n for n in os.listdir(directory) if n.startswith(_LEFTOVER_PREFIX)]
        for name in names:
            pid_text = name[len(_LEFTOVER_PREFIX) :]
            if not pid_text.isdigit() or int(pid_text) == os.getpid():
                continue
            try:
                os.kill(int(pid_text), 0)
                continue  # still running: its own file
            except ProcessLookupError:
                pass
            except OSError:
                continue  # another user's, running
            path = os.path.join(directory, name)
            with contextlib.suppress(OSError):
                with open(path, "rb") as f:
                    text = f.read(65536).decode(errors="replace")
                os.unlink(path)
                lines = [
                    line
                    for line in text.splitlines(keepends=True)
                    if not any(noise in line for noise in _JACK_NOISE)
                ]
                # Only chatter: the process ended there for another reason (a stop while a
                # worker thread was opening a device); the debug log has room for it.
                if any(not line.startswith(_LIBRARY_CHATTER) for line in lines):
                    head = f"process {pid_text} ended inside PortAudio/ALSA; it wrote:\n"
                    os.write(2, (head + "".join(lines)).encode())
                elif lines:
                    log.debug("process %s ended inside PortAudio/ALSA: %s", pid_text, text)


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Keep PortAudio's and ALSA's chatter off stderr while the block runs.

    Initialising PortAudio probes every ALSA pcm (dozens of "ALSA lib ... Unknown PCM" lines
    on a stock configuration, a whole screen when there is no sound card), libjack complains
    that no JACK server runs, and a failed open prints PortAudio's "Expression ... failed"
    trace. fd 2 points at a file meanwhile; afterwards the JACK lines are dropped, the ALSA and
    PortAudio lines go to the log at debug level (``-v`` shows them), and anything else is
    written back to stderr: what another thread wrote meanwhile is delayed by milliseconds,
    not lost. One block at a time in the process (a lock), as fd 2 is global.

    Should the process end inside the block (alsa-lib's and PortAudio's asserts call abort()),
    the file survives it: it is ``appliance-stderr.<pid>`` in the service's state directory
    (or the user's runtime directory), and the next process to come here writes what it holds
    to stderr, i.e. the journal (:func:`_forward_leftovers`). Without either directory the
    file is anonymous and such a message is lost with the process.
    """
    global _leftovers_checked
    with _STDERR_LOCK:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):  # no usable fd 2: nothing to protect
            yield
            return
        directory = _leftover_dir()
        if not _leftovers_checked:
            _leftovers_checked = True
            _forward_leftovers(directory)
        fd, path = _open_capture_file(directory)
        os.dup2(fd, 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            try:
                os.lseek(fd, 0, os.SEEK_SET)
                chunks = []
                while chunk := os.read(fd, 65536):
                    chunks.append(chunk)
            finally:
                os.close(fd)
                if path is not None:
                    with contextlib.suppress(OSError):
                        os.unlink(path)
            _sort_chatter(b"".join(chunks).decode(errors="replace"))


def _sort_chatter(text: str) -> None:
    kept = []
    for line in text.splitlines(keepends=True):
        if any(noise in line for noise in _JACK_NOISE):
            continue
        if line.startswith(_LIBRARY_CHATTER):
            log.debug("%s", line.rstrip())
        else:
            kept.append(line)
    if kept:
        with contextlib.suppress(OSError, ValueError):
            os.write(2, "".join(kept).encode())


def open_pyaudio(factory: Callable[[], Any] | None = None) -> Any:
    """``factory()`` (default ``pyaudio.PyAudio``) inside :func:`quiet_stderr`.

    libjack is told never to start a JACK server (it would try to run ``jackd``): PortAudio's
    JACK host API only looks for a running one, finds none, and stays off.
    """
    os.environ.setdefault("JACK_NO_START_SERVER", "1")
    if factory is None:
        import pyaudio

        factory = pyaudio.PyAudio
    with quiet_stderr():
        return factory()


class _PaDeviceInfo(ctypes.Structure):  # portaudio.h, PaDeviceInfo (structVersion 2)
    _fields_ = [
        ("structVersion", ctypes.c_int),
        ("name", ctypes.c_char_p),
        ("hostApi", ctypes.c_int),
        ("maxInputChannels", ctypes.c_int),
        ("maxOutputChannels", ctypes.c_int),
        ("defaultLowInputLatency", ctypes.c_double),
        ("defaultLowOutputLatency", ctypes.c_double),
        ("defaultHighInputLatency", ctypes.c_double),
        ("defaultHighOutputLatency", ctypes.c_double),
        ("defaultSampleRate", ctypes.c_double),
    ]


def set_default_latency(index: int, seconds: float, *, output: bool) -> bool:
    """Set device ``index``'s ``defaultLowOutputLatency`` (or ``defaultLowInputLatency``) in
    PortAudio's own device table (the same ``libportaudio.so.2`` PyAudio is linked to; it lasts
    until the next ``Pa_Terminate``). False if that table cannot be reached."""
    get_info = ctypes.CDLL("libportaudio.so.2").Pa_GetDeviceInfo
    get_info.argtypes, get_info.restype = [ctypes.c_int], ctypes.POINTER(_PaDeviceInfo)
    info = get_info(index)
    if not info or info.contents.structVersion != 2:
        return False
    field = "defaultLowOutputLatency" if output else "defaultLowInputLatency"
    setattr(info.contents, field, seconds)
    return True


def ask_latency(pa: Any, index: int, seconds: float, *, output: bool) -> bool:
    """(PORTAUDIO_LOCK held) Make PyAudio's next open of device ``index`` (its output side, or
    its input side) ask PortAudio for a buffer of at least ``seconds``.

    PyAudio has no latency argument: it passes the device's ``defaultLowInputLatency`` or
    ``defaultLowOutputLatency`` as the suggested latency, so that is raised in PortAudio's
    table (:func:`set_default_latency`). Returns whether PyAudio now reports the raised
    figure; False leaves the device as it was.
    """
    field = "defaultLowOutputLatency" if output else "defaultLowInputLatency"
    try:
        if pa.get_device_info_by_index(index)[field] >= seconds:
            return True
        if not set_default_latency(index, seconds, output=output):
            return False
        return pa.get_device_info_by_index(index)[field] >= seconds
    except (OSError, AttributeError, KeyError, ValueError) as exc:
        log.debug("device %d keeps PortAudio's default %s: %s", index, field, exc)
        return False


def _supported(pa: Any, index: int, kind: Kind, rate: int, channels: int = 1) -> bool:
    import pyaudio

    if kind == "input":
        kwargs = dict(input_device=index, input_channels=channels, input_format=pyaudio.paInt16)
    else:
        kwargs = dict(output_device=index, output_channels=channels, output_format=pyaudio.paInt16)
    try:
        return bool(pa.is_format_supported(rate, **kwargs))
    except (ValueError, OSError):
        return False


def _default_index(pa: Any, kind: Kind) -> int | None:
    try:
        info = (
            pa.get_default_input_device_info()
            if kind == "input"
            else pa.get_default_output_device_info()
        )
    except (OSError, ValueError):
        return None
    return int(info["index"])


def _info(pa: Any, index: int, *, rates: bool, defaults: tuple[int | None, int | None]):
    raw = pa.get_device_info_by_index(index)
    ins, outs = int(raw["maxInputChannels"]), int(raw["maxOutputChannels"])
    in_rates: tuple[int, ...] = ()
    out_rates: tuple[int, ...] = ()
    if rates:
        if ins:
            in_rates = tuple(r for r in STANDARD_RATES if _supported(pa, index, "input", r))
        if outs:
            out_rates = tuple(r for r in STANDARD_RATES if _supported(pa, index, "output", r))
    return DeviceInfo(
        index=index,
        name=str(raw["name"]),
        max_input_channels=ins,
        max_output_channels=outs,
        default_rate=int(raw["defaultSampleRate"]),
        input_rates=in_rates,
        output_rates=out_rates,
        is_default_input=index == defaults[0],
        is_default_output=index == defaults[1],
    )


def _all(pa: Any, *, rates: bool) -> list[DeviceInfo]:
    defaults = (_default_index(pa, "input"), _default_index(pa, "output"))
    return [_info(pa, i, rates=rates, defaults=defaults) for i in range(pa.get_device_count())]


def list_devices(pa: Any) -> list[DeviceInfo]:
    """Every device PortAudio knows, with the standard rates each supports (mono int16)."""
    return _all(pa, rates=True)


def _with_rates(pa: Any, device: DeviceInfo) -> DeviceInfo:
    defaults = (
        device.index if device.is_default_input else None,
        device.index if device.is_default_output else None,
    )
    return _info(pa, device.index, rates=True, defaults=defaults)


def find_device(pa: Any, spec: str, kind: Kind) -> DeviceInfo:
    """The device ``spec`` names, among those with ``kind`` channels; DeviceNotFound if none.

    ``default``: PortAudio's default device of that kind. An integer: that index. Otherwise a
    case-insensitive part of the name: an exact name wins, else the first (lowest index) match.
    """
    spec = spec.strip()
    devices = [d for d in _all(pa, rates=False) if d.channels(kind) > 0]
    found: DeviceInfo | None = None
    if spec.lower() == "default":
        found = next((d for d in devices if getattr(d, f"is_default_{kind}")), None)
        what = f"no default {kind} device"
    elif spec.lstrip("-").isdigit():
        found = next((d for d in devices if d.index == int(spec)), None)
        what = f"no {kind} device with index {spec}"
    else:
        wanted = spec.lower()
        exact = [d for d in devices if d.name.lower() == wanted]
        partial = [d for d in devices if wanted in d.name.lower()]
        found = (exact or partial or [None])[0]
        what = f"no {kind} device matches {spec!r}"
    if found is None:
        available = ", ".join(f"{d.index} {d.name}" for d in devices) or "none"
        raise DeviceNotFound(f"{what}; available: {available}")
    return _with_rates(pa, found)


def pick_rate(
    pa: Any,
    device: DeviceInfo,
    kind: Kind,
    wanted: int,
    candidates: Iterable[int],
    channels: int = 1,
) -> int:
    """The first rate ``device`` supports of ``wanted`` (0: none in particular) then
    ``candidates``; AudioDeviceError if it supports none of them."""
    tried: list[int] = []
    for rate in [wanted, *candidates]:
        if rate <= 0 or rate in tried:
            continue
        tried.append(rate)
        if _supported(pa, device.index, kind, rate, channels):
            return rate
    rates = ", ".join(str(r) for r in tried) or "none"
    raise AudioDeviceError(
        f"{kind} device {device.index} {device.name!r} supports none of these rates: {rates} Hz"
    )


def _khz(rates: tuple[int, ...]) -> str:
    return " ".join(f"{r / 1000:g}" for r in rates) or "-"


def format_device_table(devices: list[DeviceInfo]) -> str:
    """The table ``appliance devices`` prints: one device a line, defaults marked."""
    header = ("#", "name", "in", "out", "input rates, kHz", "output rates, kHz", "default")
    rows = [header]
    for d in devices:
        marks = [
            m for m, on in (("input", d.is_default_input), ("output", d.is_default_output)) if on
        ]
        rows.append(
            (
                str(d.index),
                d.name,
                str(d.max_input_channels),
                str(d.max_output_channels),
                _khz(d.input_rates),
                _khz(d.output_rates),
                ", ".join(marks),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    right = {0, 2, 3}  # numbers
    lines = []
    for row in rows:
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
