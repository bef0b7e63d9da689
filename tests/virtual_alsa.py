"""Virtual ALSA devices for tests: REAL PortAudio (PyAudio) over ALSA's ``file`` plugin.

There is no sound card on the build machines. ALSA's ``file`` plugin over a ``null`` slave gives
devices that PortAudio enumerates and opens like any other: capture reads s16le samples from an
``infile``, playback writes them to a ``file``. See /work/shared/testbed.md for the background.

How it is wired
---------------
``VirtualAlsa(tmp_dir).install()`` writes ``tmp_dir/asound.conf`` and points
``ALSA_CONFIG_PATH`` at it (the variable REPLACES the system ALSA configuration). Every
``PyAudio()`` created afterwards sees exactly these devices::

    index  name                  in   out   data
    0      mic                   128  0     capture from mic.raw (set_mic writes it)
    1      speaker               0    128   playback into speaker.raw (read_speaker)
    2      USB Audio Device mic  128  0     capture from usb.raw (set_usb_mic)
    3      mic_fifo              128  0     capture from a named pipe the test writes
    4      speaker_fifo          0    128   playback into a named pipe the test reads
    5      flaky                 0/128 128  capture from flaky.raw, present or not (set_flaky)
    6      default               128  128   pcm.!default: asym of speaker and mic

The indexes are PortAudio's and never change. Each device but ``flaky`` and ``default`` is
one-directional like real hardware (an ``asym`` with one side; alsa-lib says "playback slave
is not defined" on stderr when PortAudio probes the other side: harmless, and kept off the
terminal by ``appliance.audio.devices.quiet_stderr``). 128 channels is PortAudio's cap: the
null slave takes any count, and PortAudio adapts a mono request to any device anyway.

Findings this module is built on (alsa-lib 1.2.8, PortAudio 19.6, PyAudio 0.2.14):

- Re-initialisation WORKS: ``pa.terminate()`` then ``PyAudio()`` with a NEW ``ALSA_CONFIG_PATH``
  sees the new configuration (alsa-lib's ``snd_config_update`` notices the changed file list).
  We still use ONE configuration per test process (session scope, written once) with a fixed
  set of devices whose files are reset per test: a device index then means the same device in
  every test, and nothing depends on when a PyAudio instance was created.
- PortAudio's ``Pa_Initialize`` is reference counted: as long as ANY ``PyAudio`` instance in the
  process is alive, a new ``PyAudio()`` does not enumerate again, it reuses the old device list.
  A test that needs re-enumeration (``flaky``) must make sure it holds the only instance.
- ``pcm.!default`` is required (without it ``PyAudio()`` aborts the process); a capture pcm
  needs a ``file`` too (``/dev/null``).
- ``flaky`` with its infile missing is still listed (it can play), but with 0 input channels,
  like an unplugged microphone; opening it for capture by index gives ``OSError -9996``. Once
  the file exists, a NEW PortAudio initialisation lists it with input channels again.
- ``PyAudio()`` opens every pcm while enumerating, so the named pipes are held open
  ``O_RDWR`` here for the whole session (a fifo open blocks until the other end exists). The
  output pipe is shrunk with ``F_SETPIPE_SZ`` so the test's reads really pace the writer.
- The null slave has no clock: a file-backed stream runs as fast as the CPU, and past the
  infile's end the callback gets stale data, so ``set_mic`` pads with zeros. The speaker file
  is truncated whenever a playback stream is opened on it and is complete only after
  ``stream.close()``; PortAudio prefills it with 2 x frames_per_buffer of silence.

Nothing here is a mock: PortAudio, ALSA and the devices' data paths are the real libraries.

Fixtures
--------
``virtual_alsa``: the session's instance, installed. ``virtual_alsa_reset``: autouse; before
each test that uses ``virtual_alsa`` it resets the files (mic silent, speaker empty, flaky
missing, pipes drained). Import both into a test module (or conftest.py)::

    from virtual_alsa import virtual_alsa, virtual_alsa_reset  # noqa: F401
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
PIPE_SIZE = 4096  # the smallest pipe the kernel allows (one page)

USB_MIC = "USB Audio Device mic"


def _pcm_file(name: str, *, infile: Path | None = None, outfile: Path | None = None) -> str:
    """A capture-only (``infile``) or playback-only (``outfile``) device, as real ones are:
    ``asym`` with one direction makes PortAudio list 0 channels for the other."""
    quoted = name if name.isidentifier() else f'"{name}"'
    direction = "capture" if infile is not None else "playback"
    source = f'infile "{infile}" ' if infile is not None else ""
    return (
        f"pcm.{quoted} {{ type asym {direction}.pcm {{ type file slave.pcm {{ type null }} "
        f'file "{outfile or "/dev/null"}" {source}format "raw" }} }}\n'
    )


class VirtualAlsa:
    """The set of virtual devices under ``tmp_dir``; :meth:`install` makes them the system's."""

    def __init__(self, tmp_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(tmp_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.dir / "asound.conf"
        self.mic_file = self.dir / "mic.raw"
        self.speaker_file = self.dir / "speaker.raw"
        self.usb_file = self.dir / "usb.raw"
        self.flaky_file = self.dir / "flaky.raw"
        self.mic_fifo = self.dir / "mic.fifo"
        self.speaker_fifo = self.dir / "speaker.fifo"
        self.mic_fifo_fd = -1  # held O_RDWR: the test writes the mic's samples here
        self.speaker_fifo_fd = -1  # held O_RDWR: the test reads what was played from here
        self.installed = False

    # --- setup ------------------------------------------------------------------------------

    def config_text(self) -> str:
        return "".join(
            [
                _pcm_file("mic", infile=self.mic_file),
                _pcm_file("speaker", outfile=self.speaker_file),
                _pcm_file(USB_MIC, infile=self.usb_file),
                _pcm_file("mic_fifo", infile=self.mic_fifo),
                _pcm_file("speaker_fifo", outfile=self.speaker_fifo),
                # Both directions, so that it stays listed (with 0 input channels) while its
                # infile is missing and no device index moves when it comes back.
                f'pcm.flaky {{ type file slave.pcm {{ type null }} file "/dev/null" '
                f'infile "{self.flaky_file}" format "raw" }}\n',
                'pcm.!default { type asym playback.pcm "speaker" capture.pcm "mic" }\n',
            ]
        )

    def install(self) -> VirtualAlsa:
        """Write the files and asound.conf, open the pipes, set ALSA_CONFIG_PATH. Idempotent.

        Call before the PyAudio() that should see these devices.
        """
        if self.installed:
            return self
        for fifo in (self.mic_fifo, self.speaker_fifo):
            if not fifo.exists():
                os.mkfifo(fifo)
        self.mic_fifo_fd = os.open(self.mic_fifo, os.O_RDWR)
        self.speaker_fifo_fd = os.open(self.speaker_fifo, os.O_RDWR)
        with contextlib.suppress(OSError):  # the mic pipe keeps its 64 KiB: writes rarely block
            fcntl.fcntl(self.speaker_fifo_fd, F_SETPIPE_SZ, PIPE_SIZE)
        self.reset()
        self.config_path.write_text(self.config_text())
        os.environ["ALSA_CONFIG_PATH"] = str(self.config_path)
        # libjack (linked into PortAudio) may try to start a JACK server; never let it.
        os.environ.setdefault("JACK_NO_START_SERVER", "1")
        self.installed = True
        return self

    def close(self) -> None:
        for fd in (self.mic_fifo_fd, self.speaker_fifo_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.mic_fifo_fd = self.speaker_fifo_fd = -1
        self.installed = False

    def reset(self) -> None:
        """Between tests: silent mic and USB mic, empty speaker, flaky missing, pipes drained."""
        self.set_mic(np.zeros(0, dtype=np.int16))
        self.set_usb_mic(np.zeros(0, dtype=np.int16))
        if self.speaker_file.is_dir():  # a test that made it unwritable and failed
            shutil.rmtree(self.speaker_file)
        self.speaker_file.write_bytes(b"")
        self.set_flaky(False)
        for fd in (self.mic_fifo_fd, self.speaker_fifo_fd):
            if fd >= 0:
                _drain(fd)

    # --- file-backed devices ----------------------------------------------------------------

    @staticmethod
    def _padded(samples: np.ndarray, pad_s: float, rate: int, channels: int) -> bytes:
        samples = np.asarray(samples, dtype=np.int16).reshape(-1)
        pad = np.zeros(int(pad_s * rate) * channels, dtype=np.int16)
        return np.concatenate([samples, pad]).astype("<i2").tobytes()

    def set_mic(
        self, samples: np.ndarray, pad_s: float = 1.0, *, rate: int = 48000, channels: int = 1
    ) -> None:
        """The mic's infile: ``samples`` (int16; interleaved if ``channels`` > 1) then ``pad_s``
        of zeros at ``rate`` (the highest rate a test uses by default), so the run past the end
        reads silence rather than stale data."""
        self.mic_file.write_bytes(self._padded(samples, pad_s, rate, channels))

    def set_usb_mic(self, samples: np.ndarray, pad_s: float = 1.0, *, rate: int = 48000) -> None:
        self.usb_file.write_bytes(self._padded(samples, pad_s, rate, 1))

    def set_flaky(self, present: bool, samples: np.ndarray | None = None, pad_s: float = 1.0):
        """Make flaky's infile exist (with ``samples``, default 1 s of zeros) or not."""
        if not present:
            with contextlib.suppress(FileNotFoundError):
                self.flaky_file.unlink()
            return
        data = self._padded(np.zeros(0, np.int16) if samples is None else samples, pad_s, 48000, 1)
        tmp = self.flaky_file.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(self.flaky_file)  # appears complete, never half-written

    def read_speaker(self) -> np.ndarray:
        """Everything played on ``speaker`` (int16, interleaved); complete after stream.close()."""
        return np.frombuffer(self.speaker_file.read_bytes(), dtype="<i2").astype(np.int16)

    # --- paced devices (named pipes) --------------------------------------------------------

    def write_mic_fifo(self, samples: np.ndarray) -> None:
        """Append samples (int16) to mic_fifo; blocks while the pipe is full."""
        data = np.asarray(samples, dtype="<i2").tobytes()
        view = memoryview(data)
        while view:
            n = os.write(self.mic_fifo_fd, view)
            view = view[n:]

    def feed_mic_fifo(
        self,
        samples: np.ndarray,
        rate: int,
        chunk_ms: float = 20.0,
        stop: Callable[[], bool] | None = None,
    ) -> None:
        """Write ``samples`` to mic_fifo in chunks of ``chunk_ms``, each on its real-time
        schedule; for a thread: ``Thread(target=alsa.feed_mic_fifo, args=(x, 24000))``.

        With ``stop`` given, silence follows the samples, on schedule, until ``stop()`` is
        true. A capture stream whose pipe runs dry blocks in read(), and PortAudio cannot stop
        or close it until it gets data: keep feeding until the stream is closed.
        """
        samples = np.asarray(samples, dtype=np.int16)
        step = max(1, int(rate * chunk_ms / 1000))
        silence = np.zeros(step, dtype=np.int16)
        start = time.monotonic()
        i = 0
        while True:
            pos = i * step
            if pos >= len(samples) and stop is None:
                return
            if stop is not None and stop():
                return
            delay = start + pos / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.write_mic_fifo(samples[pos : pos + step] if pos < len(samples) else silence)
            i += 1

    def read_speaker_fifo(self, nbytes: int, timeout: float = 1.0) -> bytes:
        """Up to ``nbytes`` played on speaker_fifo, waiting at most ``timeout`` for the first."""
        ready, _, _ = select.select([self.speaker_fifo_fd], [], [], timeout)
        if not ready:
            return b""
        return os.read(self.speaker_fifo_fd, nbytes)

    # --- PyAudio ----------------------------------------------------------------------------

    def pyaudio(self):
        """A new PyAudio instance over these devices, with libjack's noise kept off stderr."""
        from appliance.audio.devices import open_pyaudio

        return open_pyaudio()

    def index_of(self, pa, name: str) -> int:
        for i in range(pa.get_device_count()):
            if pa.get_device_info_by_index(i)["name"] == name:
                return i
        raise LookupError(name)


def _drain(fd: int) -> None:
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    try:
        while True:
            try:
                if not os.read(fd, 65536):
                    break
            except BlockingIOError:
                break
    finally:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags)


@pytest.fixture(scope="session")
def virtual_alsa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VirtualAlsa]:
    """The session's virtual devices, installed (ALSA_CONFIG_PATH points at them)."""
    alsa = VirtualAlsa(tmp_path_factory.mktemp("alsa")).install()
    yield alsa
    alsa.close()


@pytest.fixture(autouse=True)
def virtual_alsa_reset(request: pytest.FixtureRequest) -> None:
    """Before each test that uses ``virtual_alsa``: reset its files (see VirtualAlsa.reset)."""
    if "virtual_alsa" in request.fixturenames:
        request.getfixturevalue("virtual_alsa").reset()
