"""``appliance run``: the long-running service that wires config, audio, link, panel and socket.

Start-up order: logging, the audio streams (they retry in the background if a device is
missing), the Realtime link (it retries too), the panel, the control socket; then ``READY=1``.
SIGTERM stops everything within a few seconds (``STOPPING=1``, LED off, exit 0); SIGHUP
reloads config.yaml, keeping the session when the ``realtime`` and ``tools`` keys did not change
(tools are declared in ``session.update``: new tools need a new session). Reloads run one at a
time (a SIGHUP during one queues one more), and a new ``control.socket`` moves the socket.

Before anything is opened the process is made non-dumpable (a core file would hold the key)
and claims its instance (:mod:`appliance.service.process`): a second ``appliance run`` on the
same control socket exits 1 with one line, without touching the audio devices.

The :class:`Appliance` is also the tools' :class:`~appliance.tools.ToolHost`: the volume (a
volume set by voice is kept in ``tools.state_file`` and wins over ``audio.volume`` at start),
stop_talking, and the facts get_device_status reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import time
from pathlib import Path
from typing import Any

from appliance.audio import thread_state
from appliance.audio.capture import Capture
from appliance.audio.echo import EchoCanceller
from appliance.audio.echo_reference import ReferenceTap
from appliance.audio.hotplug import SND_DIR, SoundCardWatch
from appliance.audio.playback import Playback
from appliance.config import ApiKey, Config, ConfigError, load_config
from appliance.config.loader import provider_warnings
from appliance.control import paths
from appliance.control.protocol import (
    KEY_REFUSED,
    NO_AUDIO,
    OFFLINE,
    TURN_FAILED,
    ControlError,
)
from appliance.control.server import ControlServer
from appliance.core import state_machine as sm
from appliance.panel.select import open_panel
from appliance.protocol import client_events as ce
from appliance.realtime.link_events import AuthRejected, Disconnected, SetupRejected
from appliance.realtime.supervisor import LinkSettings, SessionSupervisor
from appliance.realtime.trace import TraceWriter, open_service_trace
from appliance.service.journal import TranscriptLog
from appliance.service.notify import ServiceNotifier
from appliance.service.process import (
    InstanceLock,
    claim_instance,
    dumpable,
    make_undumpable,
    release_free_memory,
)
from appliance.tools import build_registry, webhook
from appliance.tools.state import state_file
from appliance.turns import TurnShell

log = logging.getLogger("appliance")


def turn_rules(config: Config, *, echo_cancelled: bool = False) -> sm.TurnRules:
    conv = config.conversation
    return sm.TurnRules(
        mode=config.button.mode,
        min_press_ms=config.button.min_press_ms,
        max_listen_s=config.button.max_listen_s,
        answer_timeout_s=config.realtime.answer_timeout_s,
        conversation=conv.mode,
        follow_up_s=conv.follow_up_s,
        long_press_s=conv.long_press_s,
        voice_barge_in=echo_cancelled,
    )


def server_vad(config: Config) -> ce.ServerVad:
    """The server VAD of hands-free mode and of the follow-up window."""
    vad = config.conversation.vad
    return ce.ServerVad(
        threshold=vad.threshold,
        prefix_padding_ms=vad.prefix_padding_ms,
        silence_duration_ms=vad.silence_duration_ms,
        create_response=True,
        interrupt_response=True,
    )


def listens_while_speaking(config: Config) -> bool:
    """Hands-free or with a follow-up window: the box may hear itself while it speaks."""
    return config.conversation.mode == "hands_free" or config.conversation.follow_up_s > 0


class Appliance:
    """The running box. Also the control socket's handler (press, release, talk, status)."""

    def __init__(
        self,
        config: Config,
        api_key: ApiKey,
        *,
        pa_factory: Any = None,
        pin_factory: Any = None,
        stdin: Any = None,
        sound_dir: Path = SND_DIR,
    ) -> None:
        self.config = config
        self.api_key = api_key
        self._pa_factory = pa_factory
        self._pin_factory = pin_factory
        self._stdin = stdin
        self.started_at = time.monotonic()
        self.notifier = ServiceNotifier()
        self.transcripts = TranscriptLog(
            config.logging.transcripts, logging.getLogger("appliance.transcript")
        )
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._audio_failed: dict[str, str] = {}
        self._gpio_fault: str | None = None  # the GPIO button and LED failed on a box with GPIO
        self._retry: tuple[float, str] | None = None  # (when, why) the link tries again
        self.link: SessionSupervisor | None = None
        self.trace: TraceWriter | None = None  # realtime.trace_file, one per link
        self.capture: Capture | None = None
        self.playback: Playback | None = None
        self.panel: Any = None
        self.shell: TurnShell | None = None
        self.control: ControlServer | None = None
        self._instance: InstanceLock | None = None
        self._link_pump: asyncio.Task | None = None
        self._link_waiting = False  # the link pump waits for an event (safe to cancel)
        self._reload_lock = asyncio.Lock()
        self._reload_queued = False
        # Cards coming and going (inotify, no polling): the streams rest most of the time, so
        # without this a card lost at rest would be noticed only at the next press, and one
        # plugged back in only once PortAudio happened to be initialised again.
        self.card_watch = SoundCardWatch(self._cards_changed, sound_dir)
        self._rescan: asyncio.Task | None = None
        self._rescan_again = False

    # ---- building the parts ------------------------------------------------------------

    def _new_link(self) -> SessionSupervisor:
        path = self.config.realtime.trace_file
        keep = self.trace is not None and self.trace.enabled and str(self.trace.path) == path
        if not keep:  # a reload that keeps the file keeps its writer: the old session's close
            if self.trace is not None:  # is written too, and no two writers share the file
                self.trace.close()
            self.trace = open_service_trace(path, [self.api_key.reveal()])
        settings = LinkSettings.from_config(self.config.realtime, self.api_key, self.trace)
        hands_free = self.config.conversation.mode == "hands_free"
        return SessionSupervisor(
            settings,
            build_registry(self.config, self),
            turn_detection=server_vad(self.config) if hands_free else None,
        )

    def _echo_cancelled(self) -> bool:
        """An echo canceller cleans the mic (so the box may listen while it speaks)."""
        if self.config.audio.echo_cancel == "off":
            return False
        return getattr(self.capture, "echo", None) is not None  # Capture(echo=(canceller, tap))

    def _rules(self) -> sm.TurnRules:
        return turn_rules(self.config, echo_cancelled=self._echo_cancelled())

    def _audio_kwargs(self) -> dict[str, Any]:
        return {"pa_factory": self._pa_factory} if self._pa_factory else {}

    def _wants_echo_cancel(self) -> bool:
        """``audio.echo_cancel``: on, off, or auto (on in hands-free)."""
        setting = self.config.audio.echo_cancel
        if setting != "auto":
            return setting == "on"
        # Only hands-free needs the mic while the box speaks. A push-to-talk follow-up window
        # opens after the answer has played, so it stays half duplex: a canceller whose
        # reference is misaligned can return the box's own voice, which server VAD would take
        # for a question (a loop of answers to itself).
        return self.config.conversation.mode == "hands_free"

    def _new_audio(self) -> tuple[Capture, Playback]:
        tap = echo = None
        if self._wants_echo_cancel():
            if EchoCanceller.available():
                rate = self.config.realtime.input_rate
                tap = ReferenceTap(out_rate=rate)
                echo = (EchoCanceller(rate=rate), tap)
            else:
                log.warning(
                    "echo cancellation is unavailable (%s)", EchoCanceller.unavailable_reason()
                )
        capture = Capture(
            self.config.audio,
            on_state=lambda s, e: self._audio_state("microphone", s, e),
            echo=echo,
            api_rate=self.config.realtime.input_rate,
            **self._audio_kwargs(),
        )
        playback = Playback(
            self.config.audio,
            source_rate=self.config.realtime.output_rate,
            on_state=lambda s, e: self._audio_state("speaker", s, e),
            tap=tap,
            **self._audio_kwargs(),
        )
        saved = state_file(self.config).volume()
        if saved is not None:  # set by voice: wins over audio.volume
            playback.volume = saved
        return capture, playback

    def _open_panel(self) -> Any:
        kwargs = {"pin_factory": self._pin_factory} if self._pin_factory else {}
        if self._stdin is not None:
            kwargs["stdin"] = self._stdin
        return open_panel(
            self.config.gpio,
            self.config.button,
            asyncio.get_running_loop(),
            self._panel_event,
            **kwargs,
        )

    async def _panel_fault(self) -> None:
        """A box whose button cannot be opened is broken: the error state, like a lost device
        (handled before READY=1, so the first STATUS already says so)."""
        was, self._gpio_fault = self._gpio_fault, getattr(self.panel, "fault", None)
        if self._gpio_fault is not None:
            await self.shell.handle(sm.AudioLost(f"GPIO: {self._gpio_fault}"))
        elif was is not None and not self._audio_failed:
            await self.shell.handle(sm.AudioBack())

    def _panel_event(self, event: sm.Event) -> None:
        if self.shell is not None:
            self.shell.post(event)
        if isinstance(event, sm.ButtonDown):
            refusal = self._refusal()
            explain = getattr(self.panel, "explain", None)  # the terminal's status line
            if refusal is not None and explain is not None:
                explain(str(refusal))

    # ---- running -----------------------------------------------------------------------

    async def run(self) -> int:
        make_undumpable()
        # Before any device is opened: a socket path this user cannot use is a configuration
        # problem said in one line (ConfigError, exit 78), and a second instance must not take
        # the microphone (found by the lock beside the socket: exit 1).
        path = self._control_path()
        self._instance = claim_instance(path)
        self.control = await self._open_control(path)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        try:
            await self._start()
            release_free_memory()  # what starting up freed: the box's memory at rest is less
            self.notifier.ready(self._status_line())
            log.info("the appliance is running (%s)", self._status_line())
            await self._stop.wait()
        finally:
            self.notifier.stopping()
            log.info("stopping")
            await self._shutdown()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            self._instance.release()
        return 0

    async def _start(self) -> None:
        for warning in provider_warnings(self.config):
            log.warning("%s", warning)
        self.capture, self.playback = self._new_audio()
        # The microphone is opened and heard from once (a missing one is the error state at
        # once), then rests stopped until somebody listens (a press, hands-free mode).
        self.capture.listen(False)
        await self.capture.start()
        await self.playback.start()
        self.link = self._new_link()
        self.panel = self._open_panel()
        self.shell = TurnShell(
            sm.TurnMachine(self._rules()),
            self.link,
            self.playback,
            self.panel,
            self.transcripts,
            mic=self.capture,
            on_state=self._state_changed,
            vad=server_vad(self.config),
            input_rate=self.config.realtime.input_rate,
        )
        if listens_while_speaking(self.config) and not self.shell.machine.rules.voice_barge_in:
            log.info(
                "echo cancellation is off: the microphone is deaf while the box speaks "
                "(no barge-in by voice; the button still interrupts)"
            )
        self.panel.show(sm.State.STARTING)
        for where, error in self._audio_failed.items():
            self.shell.post(sm.AudioLost(f"{where}: {error}"))
        await self._panel_fault()
        self.link.start()
        self._link_pump = self._spawn(self._pump_link(self.link))
        self._spawn(self._pump_mic(self.capture))
        self._spawn(self.notifier.run_watchdog())
        self.card_watch.start()

    def _control_path(self) -> Path:
        """``control.socket``, or the default for this user (its directory made private)."""
        configured = self.config.control.socket
        path = Path(configured or paths.server_socket())
        try:
            if not configured and str(path) == paths.user_socket():
                paths.prepare_private_dir(path)  # a user's own: mode 0700
            elif not path.parent.is_dir():
                path.parent.mkdir(mode=0o755, parents=True)
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(f"control.socket: {path.parent}: {reason}") from None
        return path

    async def _open_control(self, path: Path) -> ControlServer:
        try:
            control = ControlServer(path, self)
            await control.start()
        except ControlError as exc:
            raise ConfigError(f"control.socket: {exc}") from None
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(f"control.socket: {path.parent}: {reason}") from None
        return control

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.append(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        with contextlib.suppress(ValueError):
            self._tasks.remove(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("internal task failed: %r", task.exception(), exc_info=task.exception())

    async def _pump_link(self, link: SessionSupervisor) -> None:
        while link is self.link:
            self._link_waiting = True  # a reload cancels the pump only here, between events
            try:
                event = await link.next_event()
            finally:
                self._link_waiting = False
            if link is not self.link:
                return  # replaced by a reload
            if isinstance(event, Disconnected | AuthRejected | SetupRejected):
                self._retry = (time.monotonic() + event.retry_in_s, event.reason)
            await self.shell.on_link_event(event)
            if isinstance(event, Disconnected | AuthRejected | SetupRejected):
                self.notifier.status(self._status_line())

    async def _pump_mic(self, capture: Capture) -> None:
        async for chunk in capture.chunks():
            if capture is not self.capture:
                return
            await self.shell.on_mic_chunk(chunk)

    def _audio_state(self, where: str, state: str, error: str | None) -> None:
        if state == "failed":
            self._audio_failed[where] = error or "failed"
            if self.shell is not None:
                self.shell.post(sm.AudioLost(f"{where}: {error}"))
        elif (
            state == "running"
            and self._audio_failed.pop(where, None) is not None
            and not self._audio_failed
            and self._gpio_fault is None
            and self.shell is not None
        ):
            self.shell.post(sm.AudioBack())

    def _state_changed(self, state: sm.State) -> None:
        self.notifier.status(self._status_line())
        if state is sm.State.IDLE:
            release_free_memory()  # a turn's passing buffers: back to the kernel (~0.1 ms)

    def _status_line(self) -> str:
        if self.shell is None or self.link is None:
            return "starting"
        state = self.shell.machine.state.value
        faults = []
        if self._audio_failed:
            faults.append("audio: " + "; ".join(self._audio_failed.values()))
        if self._gpio_fault is not None:
            faults.append(f"GPIO: {self._gpio_fault}")
        if faults:
            return f"{state}, " + "; ".join(faults)
        if self.link.connected:
            return f"{state}, connected"
        if self._retry is not None:
            at, reason = self._retry
            return f"{state}, retrying in {max(0.0, at - time.monotonic()):.0f} s ({reason})"
        return f"{state}, connecting"

    def _cards_changed(self) -> None:
        """(loop) A sound card came or went: every PortAudio user lets go, then looks again."""
        if self._rescan is not None and not self._rescan.done():
            self._rescan_again = True  # one more pass after this one, for what it missed
            return
        self._rescan = self._spawn(self._rescan_audio())

    async def _rescan_audio(self) -> None:
        while True:
            self._rescan_again = False
            capture, playback = self.capture, self.playback
            if capture is None or playback is None:
                return
            # Both at once: PortAudio enumerates again only once every instance is terminated.
            await asyncio.gather(capture.suspend_device(), playback.suspend_device())
            await asyncio.gather(capture.resume_device(), playback.resume_device())
            if not self._rescan_again:
                return

    async def _shutdown(self) -> None:
        self.card_watch.stop()
        for task in list(self._tasks):
            task.cancel()
        parts = [
            self.control.close() if self.control else None,
            self.shell.close() if self.shell else None,
            self.link.close() if self.link else None,
            self.capture.stop() if self.capture else None,
            self.playback.stop() if self.playback else None,
        ]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.5):
                await asyncio.gather(*(p for p in parts if p is not None), return_exceptions=True)
                await webhook.close()  # the webhook tools' shared HTTP session
        if self.panel is not None:
            self.panel.close()
        if self.trace is not None:
            self.trace.close()

    # ---- SIGHUP ------------------------------------------------------------------------

    def request_reload(self) -> None:
        """SIGHUP: reload now, or once the running reload is done (never two at a time: they
        would swap links under each other). SIGHUPs during a wait make one more reload."""
        if self._reload_queued:
            return
        self._reload_queued = True
        self._spawn(self._reload_in_turn())

    async def _reload_in_turn(self) -> None:
        async with self._reload_lock:
            self._reload_queued = False
            await self.reload()

    def _replace_link_pump(self) -> None:
        """The old link's pump waits forever on a link that says nothing more: end it."""
        old = self._link_pump
        if old is not None and not old.done() and self._link_waiting:
            old.cancel()  # else it is handling an event and returns after it
        self._link_pump = self._spawn(self._pump_link(self.link))

    async def _move_control_socket(self, old: Config, new: Config) -> None:
        """A new ``control.socket``: listen there, then close the old one (kept on failure)."""
        where = Path(new.control.socket or paths.server_socket())
        moved = ControlServer(where, self)
        try:
            await moved.start()
        except (ControlError, OSError) as exc:
            log.error("reload: control.socket stays at %s: %s", self.control.path, exc)
            self.config = dataclasses.replace(self.config, control=old.control)
            return
        previous, self.control = self.control, moved
        if previous is not None:
            await previous.close()
        log.info("reload: the control socket moved to %s", where)

    async def reload(self) -> None:
        """Re-read config.yaml; keep what did not change (above all, the session)."""
        self.notifier.reloading()
        try:
            new = load_config(self.config.path)
            key = new.require_api_key()
        except ConfigError as exc:
            log.error("reload failed, keeping the running configuration: %s", exc)
            self.notifier.ready(self._status_line())
            return
        old, self.config = self.config, new
        if new.audio.volume != old.audio.volume:
            # The owner's new audio.volume replaces one set by voice, now and after a restart.
            state_file(new).save_volume(new.audio.volume)
        if (
            new.realtime != old.realtime
            or key != self.api_key
            or new.tools != old.tools
            or new.conversation != old.conversation
        ):
            self.api_key = key
            what = "realtime" if new.tools == old.tools else "tools"
            what = "conversation" if new.conversation != old.conversation else what
            self.shell.machine.rules = self._rules()  # the new session settles by them
            self.shell.vad = server_vad(new)
            log.info("reload: the %s settings changed; opening a new session", what)
            old_link, self.link = self.link, self._new_link()
            self.shell.link = self.link
            self._replace_link_pump()
            await old_link.close()
            self.link.start()
            await self.shell.handle(sm.SessionDown("reconfigured"))
        if new.audio != old.audio:
            if _only_volume_changed(old, new):
                self.playback.volume = new.audio.volume
            else:
                log.info("reload: the audio settings changed; reopening the devices")
                await self.capture.stop()
                await self.playback.stop()
                self.capture, self.playback = self._new_audio()
                self.shell.playback = self.playback
                self.shell.mic = self.capture
                self.capture.listen(self.shell.sending)
                await self.capture.start()
                await self.playback.start()
                self._spawn(self._pump_mic(self.capture))
        if new.gpio != old.gpio or new.button != old.button:
            self.panel.close()
            self.panel = self._open_panel()
            self.shell.panel = self.panel
            self.panel.show(self.shell.machine.state)
            await self._panel_fault()
        if new.control.socket != old.control.socket:
            await self._move_control_socket(old, new)
        self.shell.machine.rules = self._rules()
        self.transcripts.enabled = new.logging.transcripts
        logging.getLogger().setLevel(new.logging.level.upper())
        log.info("reloaded %s", new.path)
        self.notifier.ready(self._status_line())

    # ---- the tools' host (appliance.tools.ToolHost) ---------------------------------------

    @property
    def volume(self) -> float:
        return self.playback.volume if self.playback is not None else self.config.audio.volume

    def set_volume(self, volume: float) -> None:
        if self.playback is not None:
            self.playback.volume = volume

    def stop_talking(self) -> None:
        if self.shell is not None:
            self.shell.stop_talking()

    def device_facts(self) -> dict[str, Any]:
        link = self.link
        return {
            "state": self.shell.machine.state.value if self.shell is not None else "starting",
            "connected": link is not None and link.connected,
            "uptime_s": time.monotonic() - self.started_at,
            "session_age_s": link.session_age_s if link is not None else None,
        }

    # ---- the control socket's handler --------------------------------------------------

    def _refusal(self) -> ControlError | None:
        """Why a press cannot start a turn now (the reply says it), or None."""
        if self.shell is None or self.link is None:
            return ControlError("the appliance is starting; try again in a moment", code=OFFLINE)
        if self.shell.machine.auth_failed:
            reason = self._retry[1] if self._retry else "the API key was refused"
            return ControlError(f"the API key was refused: {reason}", code=KEY_REFUSED)
        for where, error in self._audio_failed.items():
            return ControlError(f"no {where}: {error}", code=NO_AUDIO)
        if not self.link.connected:
            reason = self._retry[1] if self._retry else "connecting"
            return ControlError(f"not connected to the Realtime API ({reason})", code=OFFLINE)
        return None

    async def press(self) -> None:
        refusal = self._refusal()
        if self.shell is not None:
            await self.shell.press()  # as the button would: the "not connected" sound plays
        if refusal is not None:
            raise refusal

    async def release(self) -> None:
        if self.shell is not None:
            await self.shell.release()

    async def talk(self, seconds: float) -> dict:
        refusal = self._refusal()
        if refusal is not None:
            raise refusal
        before = self.shell.last_turn
        await self.shell.press()
        await asyncio.sleep(seconds)
        await self.shell.release()
        answer_s = self.config.realtime.answer_timeout_s
        turn = await self.shell.wait_turn_end(answer_s + 120)
        if turn is None or turn is before:
            raise ControlError(
                f"the turn failed: {self._refusal() or 'the press started no turn'}",
                code=TURN_FAILED,
            )
        if turn.result != "answered":
            why = (
                {
                    "timeout": f"no answer within {answer_s:g} s",
                    "too_short": "the question was shorter than the shortest press",
                    "cancelled": "it was cancelled (pressed again, or the box was stopped)",
                }.get(turn.result)
                or self.shell.counters.last_error
                or turn.result
            )
            raise ControlError(f"the turn {turn.result}: {why}", TURN_FAILED, turn=turn.summary())
        return turn.summary()

    def status(self) -> dict:
        shell, link = self.shell, self.link
        if shell is None or link is None:
            return {"state": "starting", "connected": False}
        counters = shell.counters
        age = link.session_age_s
        return {
            "state": shell.machine.state.value,
            "connected": link.connected,
            "session_id": link.session_id,
            "session_age_s": None if age is None else round(age, 1),
            "reconnects": link.reconnects,
            "uptime_s": round(time.monotonic() - self.started_at, 1),
            "turns": counters.turns,
            "answered": counters.answered,
            "failed": counters.failed,
            "results": dict(counters.results),
            "last_turn": shell.last_turn.summary() if shell.last_turn else None,
            "audio": {
                "capture": _audio_figures(self.capture),
                "playback": _audio_figures(self.playback),
                "echo": _echo_figures(getattr(self.capture, "echo", None)),
                "volume": self.playback.volume,
                "card_changes": self.card_watch.changes,
                # PortAudio thread states that outlived their thread (a stream that stopped
                # without a last callback): a few hundred bytes each (audio/thread_state.py)
                "thread_states_leaked": thread_state.leaked(),
            },
            "errors": counters.errors,
            "last_error": counters.last_error or link.last_error,
            # The process: for `appliance status` and the soak bench (no task growth).
            "tasks": len(asyncio.all_tasks()),
            "dumpable": dumpable(),
        }


def _only_volume_changed(old: Config, new: Config) -> bool:
    return dataclasses.replace(old.audio, volume=new.audio.volume) == new.audio


def _echo_figures(echo: tuple[EchoCanceller, ReferenceTap] | None) -> dict | None:
    """The echo canceller's alignment (None without one): where it measured the echo, how far
    it moved the reference, and how the reference is placed (audio/echo_reference.py)."""
    if echo is None:
        return None
    canceller, tap = echo
    delay = canceller.estimator.delay if canceller.estimator is not None else None
    return {
        "delay_ms": None if delay is None else round(delay * 1000 / canceller.rate, 1),
        "shift_ms": round(canceller.shift * 1000 / canceller.rate, 1),
        "realigns": canceller.realigns,
        "resyncs": tap.resyncs,
        "by_stamps": tap.by_stamps,  # PortAudio's ADC/DAC times (else the callbacks' arrival)
        "speaker_silence_ms": round(tap.silence_frames * 1000 / (tap.device_rate or 1)),
    }


def _audio_figures(part: Any) -> dict:
    names = (
        "state",
        "error",
        "device_name",
        "device_rate",
        "overruns",
        "underruns",
        "device_underruns",
        "dropped_frames",
        "cut_frames",
        "callbacks",
        "callback_errors",
        "last_flush_ms",
        # the microphone: times its stream was started, whether it runs now, and the latest
        # start's press -> first captured sample (bench/idle.py's press_to_capture_ms)
        "starts",
        "streaming",
        "press_to_capture_ms",
    )
    return {n: getattr(part, n) for n in names if hasattr(part, n)}
