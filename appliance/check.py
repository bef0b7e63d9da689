"""``appliance check``: the owner's doctor, one line per check, ``ok`` or ``FAIL`` with what to do.

The checks, in order: the configuration (if it is invalid nothing else is tried: exit 78), the
API key (present; only its source is shown, never the key), the microphone and the speaker
(found, and a rate they take, chosen exactly as Capture and Playback choose), one second
recorded with its level, an earcon played, the button read and the LED cycled (when
``gpio.enabled``), one Realtime session opened until ``session.created`` and closed, and the
clock. Each check is a small function returning :class:`Result`s; each has its own time limit
and turns any exception into a FAIL line, so ``check`` always ends and never prints a traceback.

With ``--trace PATH`` every Realtime event of that session goes to PATH (see
appliance/realtime/trace.py), and the check listens a little longer after ``session.update``
(until the server is quiet for TRACE_QUIET_S, at most TRACE_LISTEN_S) so the trace holds the
server's answer to it; a last ``trace`` line says where the file is. A PATH that cannot be
written exits 2 before any check.

Exit code: 0 when nothing failed; 78 for an invalid configuration or a missing key; 77 when the
key was refused; 1 for any other failure. A ``skip`` is not a failure.

It may run while the service holds the sound card or the pins (install.sh runs it as root with
``CREDENTIALS_DIRECTORY=/etc/appliance``): a device that is busy says so, and how to free it.
The component loggers are kept off the terminal (``-v`` shows them on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from appliance.blocking import in_daemon_thread
from appliance.config import Config, ConfigError, find_config_path, load_config
from appliance.config.schema import AudioConfig
from appliance.realtime.trace import TraceFileError, TraceWriter

OK, FAIL, SKIP = "ok", "FAIL", "skip"
EX_FAIL, EX_USAGE, EX_NOPERM, EX_CONFIG = 1, 2, 77, 78

AUDIO_TIMEOUT_S = 3.0  # opening a device, and the slack on top of the recording
RECORD_S = 1.0
GPIO_TIMEOUT_S = 3.0
LED_STEP_S = 0.3  # the LED is on this long, then off
SILENCE_PEAK = 2  # |sample| never above this: digital silence (a muted input, at most dither)
MIN_YEAR = 2025
CLOCK_SLACK = timedelta(days=1)  # the build machine's clock may run a little ahead
TRACE_QUIET_S = 1.0  # with --trace: listen after session.update until the server is this quiet
TRACE_LISTEN_S = 5.0  # ... but no longer than this

BUSY_HINT = (
    "the device is busy; is the appliance service running? "
    "stop it for this check: sudo systemctl stop appliance"
)
CLOCK_HINT = "the clock is wrong: TLS needs the right time; is NTP (systemd-timesyncd) running?"
SILENCE_HINT = "the microphone hears nothing: is it muted? (alsamixer)"
_PA_DEVICE_UNAVAILABLE = -9985  # PortAudio's paDeviceUnavailable: ALSA said EBUSY
_EBUSY = 16


@dataclass(frozen=True)
class Result:
    """One line: ``status`` is ok, FAIL or skip; ``exit_code`` is what a FAIL exits with."""

    name: str
    status: str
    detail: str
    hint: str = ""
    exit_code: int = 0

    @classmethod
    def ok(cls, name: str, detail: str) -> Result:
        return cls(name, OK, detail)

    @classmethod
    def fail(cls, name: str, detail: str, hint: str = "", exit_code: int = EX_FAIL) -> Result:
        return cls(name, FAIL, detail, hint, exit_code)

    @classmethod
    def skip(cls, name: str, detail: str) -> Result:
        return cls(name, SKIP, detail)


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def format_result(result: Result, secrets: Iterable[str] = ()) -> str:
    """``ok    speaker      'default' at 48000 Hz``; a hint follows a FAIL after ``->``."""
    line = f"{result.status:<6}{result.name:<13}{one_line(result.detail)}"
    if result.hint:
        line += f"  -> {one_line(result.hint)}"
    for secret in secrets:  # belt and braces: no message here should hold the key anyway
        if secret:
            line = line.replace(secret, "***")
    return line.rstrip()


def exit_code(results: Iterable[Result]) -> int:
    """0 if nothing failed; else 78 before 77 before 1."""
    codes = {r.exit_code or EX_FAIL for r in results if r.status == FAIL}
    for code in (EX_CONFIG, EX_NOPERM, EX_FAIL):
        if code in codes:
            return code
    return 0


def describe(exc: BaseException) -> str:
    """``TypeName: message``, on one line."""
    text = one_line(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ---- busy devices -----------------------------------------------------------------------


def is_busy(error: BaseException | str) -> bool:
    """Whether a PortAudio/ALSA/GPIO error means another process holds the device."""
    if isinstance(error, BaseException):
        codes = [getattr(error, "errno", None), *getattr(error, "args", ())]
        if _PA_DEVICE_UNAVAILABLE in codes or _EBUSY in codes:
            return True
        error = str(error)
    text = error.lower()
    return "busy" in text or "device unavailable" in text or str(_PA_DEVICE_UNAVAILABLE) in text


def alsa_owners(proc_asound: Path = Path("/proc/asound")) -> list[str]:
    """``pid N (name)`` of every process with an ALSA pcm open, other than this one."""
    owners: list[str] = []
    for status in sorted(proc_asound.glob("card*/pcm*/sub*/status")):
        with contextlib.suppress(OSError, ValueError):
            for line in status.read_text().splitlines():
                key, _, value = line.partition(":")
                if key.strip() == "owner_pid" and int(value) != os.getpid():
                    comm = Path(f"/proc/{int(value)}/comm")
                    name = comm.read_text().strip() if comm.exists() else "?"
                    owners.append(f"pid {int(value)} ({name})")
    return list(dict.fromkeys(owners))


# ---- running a check in time ------------------------------------------------------------


async def guarded(
    names: tuple[str, ...], limit_s: float, check: Callable[[], Awaitable[list[Result]]]
) -> list[Result]:
    """``check()`` within ``limit_s``; a timeout or an exception becomes FAIL lines."""
    try:
        async with asyncio.timeout(limit_s):
            return await check()
    except TimeoutError:
        return [Result.fail(n, f"no answer within {limit_s:g} s") for n in names]
    except Exception as exc:
        return [Result.fail(n, describe(exc)) for n in names]


# ---- the checks ---------------------------------------------------------------------------


def check_key(config: Config) -> Result:
    try:
        config.require_api_key()
    except ConfigError as exc:
        detail, _, hint = str(exc).partition(": ")
        return Result.fail("api key", detail, hint, EX_CONFIG)
    return Result.ok("api key", f"present (from {config.realtime.api_key_source})")


def probe_devices(audio: AudioConfig, answer_rate: int) -> list[Result]:
    """(worker thread) The microphone and the speaker: found, and the rate each would use."""
    from appliance.audio.devices import open_pyaudio, quiet_stderr
    from appliance.audio.mic_stream import CAPTURE_RATES
    from appliance.audio.playback import RATE_CANDIDATES

    pa = open_pyaudio()
    try:
        with quiet_stderr():
            mic = _probe(pa, "input", audio.input_device, audio.input_rate, CAPTURE_RATES)
            wanted = audio.output_rate or answer_rate
            candidates = () if audio.output_rate else RATE_CANDIDATES
            speaker = _probe(pa, "output", audio.output_device, wanted, candidates)
    finally:
        with contextlib.suppress(Exception):
            pa.terminate()
    return [mic, speaker]


def _probe(pa: Any, kind: str, spec: str, wanted: int, candidates: tuple[int, ...]) -> Result:
    from appliance.audio.devices import AudioDeviceError, DeviceNotFound, find_device, pick_rate

    name, setting = ("microphone", "input") if kind == "input" else ("speaker", "output")
    try:
        device = find_device(pa, spec, kind)  # type: ignore[arg-type]
    except DeviceNotFound as exc:
        owners = alsa_owners()
        if owners:
            return Result.fail(name, f"{exc}; in use by {', '.join(owners)}", BUSY_HINT)
        hint = f"set audio.{setting}_device (see `appliance devices`)"
        if str(exc).endswith("available: none"):
            hint = f"no {kind} device at all: is the sound card connected? user in group audio?"
        return Result.fail(name, str(exc), hint)
    # As Capture does: mono if the device can, else its channels (at most 2), downmixed.
    options = (
        [1] if kind == "output" else [*dict.fromkeys([1, min(max(device.channels(kind), 1), 2)])]
    )
    error: AudioDeviceError | None = None
    for channels in options:
        try:
            rate = pick_rate(pa, device, kind, wanted, candidates, channels)  # type: ignore[arg-type]
        except AudioDeviceError as exc:
            error = error or exc
            continue
        extra = f", {channels} channels (downmixed)" if channels > 1 else ""
        return Result.ok(name, f"{device.name!r} at {rate} Hz{extra}")
    reason = _open_error(pa, device.index, kind, wanted or candidates[0])
    owners = alsa_owners()
    if is_busy(reason) or owners:
        why = "; ".join(filter(None, [reason, owners and f"in use by {', '.join(owners)}"]))
        return Result.fail(name, f"{error} ({why})", BUSY_HINT)
    return Result.fail(
        name, str(error), f"set audio.{setting}_rate to one it takes (see `appliance devices`)"
    )


def _open_error(pa: Any, index: int, kind: str, rate: int) -> str:
    """PortAudio's own reason why ``index`` does not take ``rate`` (mono int16), or ""."""
    import pyaudio

    prefix = "input" if kind == "input" else "output"
    kwargs = {
        f"{prefix}_device": index,
        f"{prefix}_channels": 1,
        f"{prefix}_format": pyaudio.paInt16,
    }
    try:
        pa.is_format_supported(rate, **kwargs)
    except (ValueError, OSError) as exc:
        return one_line(" ".join(str(a) for a in exc.args))
    return ""


def levels(samples: Any) -> tuple[float, float]:
    """(peak, rms) of int16 samples in dBFS; -inf for silence."""
    import numpy as np

    x = np.asarray(samples, dtype=np.int16).astype(np.float64)
    if not len(x):
        return -math.inf, -math.inf
    peak, rms = float(np.max(np.abs(x))), float(np.sqrt(np.mean(x * x)))
    return tuple(20 * math.log10(v / 32768) if v > 0 else -math.inf for v in (peak, rms))


def _db(value: float) -> str:
    return "-inf" if value == -math.inf else f"{value:.0f}"


def level_result(samples: Any, rate: int) -> Result:
    """The mic-level line for what was recorded."""
    import numpy as np

    x = np.asarray(samples, dtype=np.int16)
    peak, rms = levels(x)
    detail = f"{len(x) / rate:.1f} s recorded, peak {_db(peak)} dBFS, rms {_db(rms)} dBFS"
    if not len(x) or int(np.max(np.abs(x.astype(np.int32)))) <= SILENCE_PEAK:
        return Result.fail("mic level", f"{detail} (digital silence)", SILENCE_HINT)
    return Result.ok("mic level", detail)


async def check_recording(audio: AudioConfig) -> list[Result]:
    import numpy as np

    from appliance.audio.capture import OUTPUT_RATE, Capture

    capture = Capture(audio)
    want = round(OUTPUT_RATE * RECORD_S) * 2
    data = bytearray()
    try:
        async with asyncio.timeout(AUDIO_TIMEOUT_S):
            await capture.start()
        if capture.state != "running":
            hint = BUSY_HINT if is_busy(capture.error) else "check audio.input_device"
            return [Result.fail("mic level", capture.error or capture.state, hint)]
        try:
            async with (
                asyncio.timeout(RECORD_S + AUDIO_TIMEOUT_S),
                contextlib.aclosing(capture.chunks()) as chunks,
            ):
                async for chunk in chunks:
                    data += chunk
                    if len(data) >= want:
                        break
        except TimeoutError:
            got = len(data) / 2 / OUTPUT_RATE
            return [
                Result.fail(
                    "mic level",
                    f"only {got:.1f} s of audio in {RECORD_S + AUDIO_TIMEOUT_S:g} s",
                    "the microphone stalls: check its cable, or try another audio.input_device",
                )
            ]
    finally:
        await capture.stop()
    return [level_result(np.frombuffer(bytes(data[:want]), dtype="<i2"), OUTPUT_RATE)]


async def check_earcon(audio: AudioConfig, answer_rate: int) -> list[Result]:
    from appliance.audio.playback import Playback

    # Played even with audio.sounds off: this checks the speaker, not the setting.
    playback = Playback(dataclasses.replace(audio, sounds=True), source_rate=answer_rate)
    try:
        async with asyncio.timeout(AUDIO_TIMEOUT_S):
            await playback.start()
        if playback.state != "running":
            error = playback.error or playback.state
            hint = BUSY_HINT if is_busy(error) else "check audio.output_device"
            return [Result.fail("earcon", error, hint)]
        playback.play_earcon("listening")
        if not await playback.wait_drained(AUDIO_TIMEOUT_S):
            return [
                Result.fail(
                    "earcon",
                    f"'listening' did not finish playing within {AUDIO_TIMEOUT_S:g} s",
                    "the speaker takes no audio: check it, or try another audio.output_device",
                )
            ]
        note = "" if audio.volume > 0 else " (but audio.volume is 0: nothing is heard)"
        return [Result.ok("earcon", f"played 'listening' on {playback.device_name!r}{note}")]
    finally:
        await playback.stop()


def has_gpio(dev: Path = Path("/dev")) -> bool:
    return any(dev.glob("gpiochip*"))


async def check_gpio(config: Config, warnings: list[logging.LogRecord]) -> list[Result]:
    from appliance.core.state_machine import State
    from appliance.panel.select import open_gpio

    gpio = config.gpio
    if not gpio.enabled:
        why = "gpio.enabled is false" + ("" if has_gpio() else "; no GPIO on this machine")
        return [Result.skip("button", why), Result.skip("led", why)]
    loop = asyncio.get_running_loop()
    opening = in_daemon_thread(
        open_gpio, gpio, config.button, loop, lambda event: None, late=lambda p: p.close()
    )
    try:
        panel = await asyncio.wait_for(opening, GPIO_TIMEOUT_S)
    except Exception as exc:
        if isinstance(exc, ImportError):  # gpiozero's BadPinFactory, or no gpiozero at all
            detail = f"no GPIO on this machine ({describe(exc)})"
            hint = "on a Pi: apt install python3-lgpio; elsewhere set gpio.enabled: false"
        elif isinstance(exc, TimeoutError):
            detail, hint = f"the pins did not open within {GPIO_TIMEOUT_S:g} s", ""
        else:
            detail = f"cannot claim BCM {gpio.button_pin} / BCM {gpio.led_pin}: {describe(exc)}"
            busy = is_busy(exc) or "in use" in str(exc).lower()
            hint = BUSY_HINT if busy else "check gpio.button_pin and gpio.led_pin"
        return [
            Result.fail("button", detail, hint),
            Result.fail("led", "not tried: the GPIO did not open (see button)"),
        ]
    try:
        pressed = panel.button.is_pressed
        button = Result.ok("button", f"BCM {gpio.button_pin} reads released")
        if pressed:
            button = Result.ok(
                "button",
                f"BCM {gpio.button_pin} reads pressed (if nobody holds it: it must connect "
                "the pin to GND only while pressed)",
            )
        seen = len(warnings)
        panel.led.show(State.LISTENING)  # full brightness
        await asyncio.sleep(LED_STEP_S)
        panel.led.off()
        await asyncio.sleep(LED_STEP_S / 3)
        failed = [r for r in warnings[seen:] if r.name.startswith("appliance.panel.led")]
        if failed:
            led = Result.fail("led", failed[0].getMessage(), "check gpio.led_pin and the wiring")
        else:
            led = Result.ok("led", f"BCM {gpio.led_pin} cycled")
        return [button, led]
    finally:
        with contextlib.suppress(Exception):  # what was found stands; the pins free on exit
            await asyncio.wait_for(in_daemon_thread(panel.close), GPIO_TIMEOUT_S)


async def check_realtime(config: Config, trace: TraceWriter | None = None) -> list[Result]:
    import aiohttp

    from appliance.protocol.client_events import session_update
    from appliance.realtime.session import (
        AuthRefused,
        ConnectFailed,
        RealtimeSession,
        SetupRefused,
    )
    from appliance.realtime.supervisor import SETUP_EVENT_ID, LinkSettings

    rt = config.realtime
    key = config.require_api_key()
    settings = LinkSettings.from_config(rt, key)
    setup = session_update(rt.spec, settings.shape, event_id=SETUP_EVENT_ID)
    started = time.monotonic()
    try:
        async with aiohttp.ClientSession() as http:
            session = await RealtimeSession.open(
                http,
                endpoint=rt.endpoint,
                api_key=key,
                setup=setup,
                provider=rt.spec,
                auth=rt.auth,
                connect_timeout_s=rt.connect_timeout_s,
                heartbeat_s=rt.heartbeat_s,
                trace=trace,
            )
            ms = round((time.monotonic() - started) * 1000)
            if trace is not None:
                # What the server says after session.updated belongs in a bug report too.
                await listen_until_quiet(session, TRACE_QUIET_S, TRACE_LISTEN_S)
            await session.close()
    except AuthRefused as exc:
        hint = (
            f"put the right key in {rt.api_key_source} (a key with access to folder {rt.folder_id})"
            if rt.spec.model_in_folder
            else f"put the right key in {rt.api_key_source}"
        )
        return [Result.fail("realtime", str(exc), hint, EX_NOPERM)]
    except SetupRefused as exc:
        hint = "check realtime.provider, model, voice and the rates against the service"
        return [Result.fail("realtime", str(exc), hint, EX_CONFIG)]
    except ConnectFailed as exc:
        hint = f"check the network and realtime.url ({rt.url}); the clock too (below)"
        return [Result.fail("realtime", str(exc), hint)]
    took = "session.updated" if session.updated is not None else "session.created"
    return [
        Result.ok(
            "realtime",
            f"{took} from {rt.provider} ({rt.url}) in {ms} ms (session {session.session_id})",
        )
    ]


async def listen_until_quiet(session: Any, quiet_s: float, limit_s: float) -> None:
    """Read (and so trace) what the server sends until it is quiet for ``quiet_s``, at most
    ``limit_s``; the caller closes the session, which ends the reading."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    heard = asyncio.Event()

    async def read() -> None:
        async for _event in session.events():
            heard.set()

    reader = asyncio.create_task(read())
    try:
        while not reader.done() and (left := deadline - loop.time()) > 0:
            heard.clear()
            try:
                await asyncio.wait_for(heard.wait(), min(quiet_s, left))
            except TimeoutError:
                break
    finally:
        await session.close()
        with contextlib.suppress(Exception):
            await reader


def build_time() -> datetime:
    """When this software was built (installed): its package's mtime; the epoch if unknown."""
    try:
        return datetime.fromtimestamp(Path(__file__).with_name("__init__.py").stat().st_mtime, UTC)
    except (OSError, ValueError, OverflowError):
        return datetime.fromtimestamp(0, UTC)


def check_clock(now: datetime, built: datetime) -> Result:
    shown = now.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    if now.year < MIN_YEAR:
        return Result.fail("clock", f"{shown}, before {MIN_YEAR}", CLOCK_HINT)
    if now < built - CLOCK_SLACK:
        when = built.strftime("%Y-%m-%d")
        return Result.fail("clock", f"{shown}, before this software was built ({when})", CLOCK_HINT)
    return Result.ok("clock", f"{shown} (TLS needs the right time)")


# ---- the command ----------------------------------------------------------------------


class _Warnings(logging.Handler):
    """Keeps the WARNING+ records of the components, for the checks to look at."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _setup_logging(verbose: bool) -> _Warnings:
    from appliance.logs import setup_logging

    collector = _Warnings()
    root = logging.getLogger()
    if verbose:
        setup_logging("debug")
        root.addHandler(collector)
    else:  # the lines below say it; the components' own warnings would only repeat it
        root.handlers[:] = [collector]
        root.setLevel(logging.WARNING)
    return collector


async def _checks(
    config: Config,
    args: argparse.Namespace,
    emit,
    warnings,
    trace: TraceWriter | None = None,
) -> None:
    audio, answer_rate = config.audio, config.realtime.output_rate
    if getattr(args, "skip_audio", False):
        for name in ("microphone", "speaker", "mic level", "earcon"):
            emit(Result.skip(name, "--skip-audio"))
    else:
        mic, speaker = await guarded(
            ("microphone", "speaker"),
            AUDIO_TIMEOUT_S * 2,
            lambda: in_daemon_thread(probe_devices, audio, answer_rate),
        )
        emit(mic)
        emit(speaker)
        if mic.status == OK:
            for r in await guarded(
                ("mic level",), RECORD_S + AUDIO_TIMEOUT_S * 3, lambda: check_recording(audio)
            ):
                emit(r)
        else:
            emit(Result.skip("mic level", "not tried: the microphone is not usable"))
        if speaker.status == OK:
            for r in await guarded(
                ("earcon",), AUDIO_TIMEOUT_S * 3, lambda: check_earcon(audio, answer_rate)
            ):
                emit(r)
        else:
            emit(Result.skip("earcon", "not tried: the speaker is not usable"))
    for r in await guarded(
        ("button", "led"), GPIO_TIMEOUT_S * 3, lambda: check_gpio(config, warnings)
    ):
        emit(r)
    if getattr(args, "skip_network", False):
        emit(Result.skip("realtime", "--skip-network"))
    elif config.realtime.api_key is None:
        emit(Result.skip("realtime", "not tried: no API key"))
    else:
        timeout = config.realtime.connect_timeout_s * 2 + 3
        if trace is not None:
            timeout += TRACE_LISTEN_S
        for r in await guarded(("realtime",), timeout, lambda: check_realtime(config, trace)):
            emit(r)


def run_check(args: argparse.Namespace) -> int:
    """``appliance check``: print one line per check; the exit code (see the module docstring)."""
    collector = _setup_logging(bool(getattr(args, "verbose", False)))
    os.environ.setdefault("JACK_NO_START_SERVER", "1")  # PortAudio's libjack: never start jackd
    results: list[Result] = []
    secrets: list[str] = []
    trace: TraceWriter | None = None
    trace_path = getattr(args, "trace", None)
    if trace_path is not None:
        try:
            trace = TraceWriter(trace_path)
        except TraceFileError as exc:
            print(f"appliance check: {exc}", file=sys.stderr)
            return EX_USAGE
    try:
        return _run_checks(args, collector, results, secrets, trace)
    finally:
        if trace is not None:
            trace.close()


def _run_checks(
    args: argparse.Namespace,
    collector: _Warnings,
    results: list[Result],
    secrets: list[str],
    trace: TraceWriter | None,
) -> int:
    def emit(result: Result) -> None:
        results.append(result)
        print(format_result(result, secrets), flush=True)

    try:
        config = load_config(find_config_path(getattr(args, "config", None)))
    except ConfigError as exc:
        emit(Result.fail("config", str(exc), "fix it, then run `appliance check` again", EX_CONFIG))
        return EX_CONFIG
    except Exception as exc:
        emit(Result.fail("config", describe(exc), "", EX_CONFIG))
        return EX_CONFIG
    if config.realtime.api_key is not None:
        secrets.append(config.realtime.api_key.reveal())
        if trace is not None:
            trace.protect(config.realtime.api_key.reveal())
    emit(Result.ok("config", f"{config.path} is valid"))
    emit(check_key(config))
    try:
        asyncio.run(_checks(config, args, emit, collector.records, trace))
    except Exception as exc:  # a bug in the sequencing itself: still one line, no traceback
        emit(Result.fail("check", describe(exc)))
    try:
        emit(check_clock(datetime.now(UTC), build_time()))
    except Exception as exc:
        emit(Result.fail("clock", describe(exc)))
    if trace is not None:
        stopped = "" if trace.enabled else " (then it stopped: see the log with -v)"
        emit(Result.ok("trace", f"{trace.lines} lines in {trace.path}{stopped}"))
    sys.stdout.flush()
    return exit_code(results)
