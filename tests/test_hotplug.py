"""The sound card watch: the real inotify, on a temporary directory standing in for /dev/snd
(creating nodes in the real one needs root and a driver; the kernel's inotify is the same)."""

from __future__ import annotations

import asyncio
import shutil
import struct

from appliance.audio.hotplug import IN_CREATE, SoundCardWatch, inotify_events, is_card_node

SETTLE_S = 0.05


def test_inotify_events_parses_an_inotify_buffer():
    def event(wd: int, mask: int, name: str) -> bytes:
        raw = name.encode() + b"\0" * (16 - len(name)) if name else b""
        return struct.pack("iIII", wd, mask, 0, len(raw)) + raw

    buffer = (
        event(1, IN_CREATE, "controlC1") + event(1, IN_CREATE, "pcmC1D0p") + event(2, 0x8000, "")
    )
    assert inotify_events(buffer) == [
        (1, IN_CREATE, "controlC1"),
        (1, IN_CREATE, "pcmC1D0p"),
        (2, 0x8000, ""),
    ]


def test_only_card_nodes_count():
    assert is_card_node("controlC0") and is_card_node("pcmC2D0c")
    assert not is_card_node("seq") and not is_card_node("timer") and not is_card_node("by-id")


async def _watch(directory):
    calls = []
    watch = SoundCardWatch(
        lambda: calls.append(asyncio.get_running_loop().time()), directory, SETTLE_S
    )
    assert watch.start()
    return watch, calls


async def test_a_card_burst_is_one_change(tmp_path):
    snd = tmp_path / "snd"
    snd.mkdir()
    (snd / "timer").touch()
    watch, calls = await _watch(snd)
    try:
        for name in ("controlC1", "pcmC1D0p", "pcmC1D0c"):  # a USB card plugged in
            (snd / name).touch()
            await asyncio.sleep(0.01)
        await asyncio.sleep(SETTLE_S * 4)
        assert len(calls) == 1
        for name in ("pcmC1D0p", "pcmC1D0c", "controlC1"):  # and pulled out
            (snd / name).unlink()
        await asyncio.sleep(SETTLE_S * 4)
        assert len(calls) == 2
        (snd / "seq").touch()  # not a card: no call
        await asyncio.sleep(SETTLE_S * 4)
        assert len(calls) == 2
    finally:
        watch.stop()


async def test_the_directory_may_come_later_and_go_again(tmp_path):
    snd = tmp_path / "snd"  # no sound driver yet
    watch, calls = await _watch(snd)
    try:
        snd.mkdir()
        await asyncio.sleep(SETTLE_S * 4)
        assert len(calls) == 1  # it appeared: look at the devices
        (snd / "controlC0").touch()  # and now it is watched itself
        await asyncio.sleep(SETTLE_S * 4)
        assert len(calls) == 2
        shutil.rmtree(snd)  # the driver unloaded
        await asyncio.sleep(SETTLE_S * 4)
        assert len(calls) == 3
        snd.mkdir()
        (snd / "controlC0").touch()
        await asyncio.sleep(SETTLE_S * 4)
        assert len(calls) == 4
    finally:
        watch.stop()


async def test_stop_ends_the_calls(tmp_path):
    snd = tmp_path / "snd"
    snd.mkdir()
    watch, calls = await _watch(snd)
    (snd / "controlC0").touch()
    watch.stop()
    await asyncio.sleep(SETTLE_S * 4)
    (snd / "controlC1").touch()
    await asyncio.sleep(SETTLE_S * 4)
    assert calls == []
