"""PortAudio's callback threads keep their Python thread state while a stream runs, and give it
back before it stops (appliance/audio/thread_state.py), through REAL PyAudio and PortAudio over
the virtual ALSA devices (virtual_alsa.py): the file-backed ``mic`` and ``speaker`` have no clock
and call back as fast as the CPU allows, which makes many callbacks in a short test.

Two things are observed from outside the code under test:

- whether a callback runs in the same Python thread state as the one before: a
  ``threading.local`` set in one callback is still there in the next only if the state lived on
  between them (PyAudio's default: a new state for every callback);
- the interpreter's list of thread states (the C API's ``PyInterpreterState_ThreadHead`` and
  ``PyThreadState_Next``): after streams stopped, the same count as before they started, so no
  state outlived its thread.
"""

from __future__ import annotations

import asyncio
import ctypes
import threading
import time

import numpy as np
import pyaudio
import pytest
from test_capture import until

from appliance.audio import thread_state
from appliance.audio.capture import Capture
from appliance.audio.playback import Playback
from appliance.config.schema import AudioConfig

pytestmark = pytest.mark.timeout(60)

_api = ctypes.pythonapi
_api.PyInterpreterState_Main.restype = ctypes.c_void_p
_api.PyInterpreterState_ThreadHead.argtypes = [ctypes.c_void_p]
_api.PyInterpreterState_ThreadHead.restype = ctypes.c_void_p
_api.PyThreadState_Next.argtypes = [ctypes.c_void_p]
_api.PyThreadState_Next.restype = ctypes.c_void_p


def thread_states() -> int:
    """How many thread states the interpreter holds (walked with the GIL held)."""
    n, ts = 0, _api.PyInterpreterState_ThreadHead(_api.PyInterpreterState_Main())
    while ts:
        n += 1
        ts = _api.PyThreadState_Next(ts)
    return n


async def settled_states(expected: int, timeout: float = 3.0) -> int:
    """The count once worker threads that just finished are gone (they end on their own)."""
    await until(lambda: thread_states() == expected, timeout)
    return thread_states()


class Continuity:
    """Counts, per callback, whether its thread state is the one of the callback before."""

    def __init__(self) -> None:
        self.kept = 0  # callbacks that found the mark the one before left
        self.fresh = 0  # callbacks in a state of their own
        self._local = threading.local()

    def pyaudio_class(self):
        seen = self

        class Observed(pyaudio.PyAudio):
            def open(self, *args, **kwargs):
                callback = kwargs["stream_callback"]

                def observed(*a):
                    if getattr(seen._local, "mark", False):
                        seen.kept += 1
                    else:
                        seen._local.mark = True
                        seen.fresh += 1
                    return callback(*a)

                kwargs["stream_callback"] = observed
                return super().open(*args, **kwargs)

        return Observed


def noise(n: int) -> np.ndarray:
    return np.random.default_rng(5).integers(-20000, 20000, n, dtype=np.int16)


async def listen_for(cap: Capture, seconds: float) -> None:
    async def read() -> None:
        async for _ in cap.chunks():
            pass

    reader = asyncio.create_task(read())
    await asyncio.sleep(seconds)
    reader.cancel()


async def test_the_microphone_keeps_one_state_per_start_and_gives_it_back(virtual_alsa):
    virtual_alsa.set_mic(noise(48000))
    seen = Continuity()
    config = AudioConfig(input_device="mic", input_rate=24000)
    base = thread_states()
    cap = Capture(config, ring_s=600, drain_s=0.01, pa_factory=seen.pyaudio_class())
    cap.listen(False)  # the daemon's way: prove the device, then rest
    try:
        await cap.start()
        starts = 5
        for _ in range(starts):
            cap.listen(True)
            await listen_for(cap, 0.15)
            cap.listen(False)
            assert await until(lambda: not cap.streaming, 3.0)
            await asyncio.sleep(0.05)
            # stopped: the callback thread is gone, and its state with it
            assert await settled_states(base) == base
        total = seen.kept + seen.fresh
        assert total > 100, "too few callbacks to tell"
        # a state per start, not per callback (this unclocked device calls back between the
        # unpin and Pa_StopStream's return too, each time in a new state, as PyAudio does)
        assert seen.kept > 20 * seen.fresh, (seen.fresh, seen.kept)
    finally:
        await cap.stop()
    assert await settled_states(base) == base


async def test_the_speaker_keeps_one_state_while_it_plays_and_gives_it_back(virtual_alsa):
    seen = Continuity()
    base = thread_states()
    config = AudioConfig(output_device="speaker", volume=1.0, speaker_idle_s=0.2)
    async with Playback(config, source_rate=44100, pa_factory=seen.pyaudio_class()) as p:
        for i in range(3):
            p.play_answer(f"item{i}", noise(44100 // 4).tobytes())
            p.end_answer(f"item{i}")
            assert await p.wait_drained(5.0)
            assert await until(lambda: not p.running, 5.0)  # stopped after speaker_idle_s
            assert await settled_states(base) == base
        assert p.starts >= 3
        assert seen.kept + seen.fresh > 100, "too few callbacks to tell"
        # a state per start, not per callback (see the microphone's test)
        assert seen.kept > 20 * seen.fresh, (seen.fresh, seen.kept, p.starts)
    assert await settled_states(base) == base


async def test_without_the_pin_every_callback_has_a_new_state(virtual_alsa, monkeypatch):
    """The observation above can fail: as PyAudio does it, no callback finds the one before's
    state (this is what the pin saves)."""
    monkeypatch.setattr(thread_state, "_API", None)
    virtual_alsa.set_mic(noise(48000))
    seen = Continuity()
    config = AudioConfig(input_device="mic", input_rate=24000)
    async with Capture(config, ring_s=600, drain_s=0.01, pa_factory=seen.pyaudio_class()) as cap:
        await listen_for(cap, 0.2)
    assert seen.fresh > 50 and seen.kept == 0, (seen.fresh, seen.kept)


class FakeCApi:
    """Stands in for PyGILState_Ensure/Release and PyThreadState_Get: the paths below (a
    callback on another thread, no callback at all) cannot be made to happen on purpose with a
    real stream, and a wrong Release on a real thread state crashes the interpreter."""

    def __init__(self) -> None:
        self.current = 0x1000  # the thread state of the thread that calls back now
        self.counts: dict[int, int] = {}

    def ensure(self) -> int:
        self.counts[self.current] = self.counts.get(self.current, 0) + 1
        return 0

    def release(self, state: int) -> None:
        self.counts[self.current] -= 1

    def get(self) -> int:
        return self.current


@pytest.fixture
def fake_api(monkeypatch):
    api = FakeCApi()
    monkeypatch.setattr(thread_state, "_API", (api.ensure, api.release, api.get))
    return api


def test_a_pin_is_taken_once_and_given_back_on_its_own_thread(fake_api):
    pin = thread_state.ThreadStatePin()
    pin.arm()
    assert pin.attend
    pin.service()
    pin.service()  # attend is off after the first: a callback would not call it, but no harm
    assert pin.pinned and fake_api.counts == {0x1000: 1} and not pin.attend
    # an old stream's thread calls back meanwhile: it must not give back what it did not take
    done = threading.Event()

    def stop() -> None:
        pin.unpin(2.0)
        done.set()

    stopper = threading.Thread(target=stop)
    stopper.start()
    assert _wait(lambda: pin.attend)
    fake_api.current = 0x2000
    pin.service()
    assert pin.pinned and fake_api.counts == {0x1000: 1} and not done.is_set()
    fake_api.current = 0x1000  # the pinned thread's next callback
    pin.service()
    stopper.join(2)
    assert done.is_set() and not pin.pinned and fake_api.counts == {0x1000: 0}
    assert (pin.pins, pin.unpins, pin.leaked) == (1, 1, 0)


def test_a_stream_that_never_calls_back_again_counts_a_leak(fake_api):
    before = thread_state.leaked()
    pin = thread_state.ThreadStatePin()
    pin.arm()
    pin.service()
    assert pin.unpin(0.05) is False  # no callback came: the state goes with its thread
    assert not pin.pinned and not pin.attend
    assert pin.leaked == 1 and thread_state.leaked() == before + 1
    assert pin.unpin(0.05) is True  # nothing held any more


def test_unpin_before_any_callback_pins_nothing_later(fake_api):
    pin = thread_state.ThreadStatePin()
    pin.arm()
    assert pin.unpin(0.05) is True  # armed, but the stream stopped before calling back
    pin.service()  # a late callback of that start
    assert not pin.pinned and fake_api.counts == {}


def _wait(predicate, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True
