"""``appliance run`` when sound cards come and go: the box watches the kernel's sound device
nodes (inotify) and has both streams let go of PortAudio and look again.

The box's cards here are ALSA plugins over named pipes (tests/box.py) and have no device nodes,
so the test gives the box a directory of its own to watch (``APPLIANCE_SND_DIR``) and plays the
kernel there: creating ``controlC1`` and ``pcmC1D0p`` is what a USB card's arrival looks like.
"""

from __future__ import annotations

import numpy as np
from box import PacedBox
from conftest import SECRET
from realtime_server import AudioAnswer, tone


def speech(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * 24000)) / 24000
    return (np.sin(2 * np.pi * 300 * t) * 6000).astype(np.int16)


async def test_a_card_plugged_in_at_rest_makes_the_box_look_again_and_go_on(server, tmp_path):
    snd = tmp_path / "snd"
    snd.mkdir()
    (snd / "controlC0").touch()
    box = PacedBox(tmp_path, server, SECRET, sounds=False)
    await box.start(env={"APPLIANCE_SND_DIR": str(snd)})
    try:
        await box.wait_status(lambda s: s["connected"] and s["state"] == "idle", 15)
        opened_before = box.log().count("speaker: ")
        for name in ("controlC1", "pcmC1D0p", "pcmC1D0c"):
            (snd / name).touch()
        status = await box.wait_status(
            lambda s: (
                s["audio"]["card_changes"] == 1
                and s["audio"]["capture"]["state"] == "running"
                and s["audio"]["playback"]["state"] == "running"
                and s["state"] == "idle"
            ),
            15,
        )
        assert status["connected"]
        log = box.log()
        assert "the sound cards changed" in log
        assert log.count("speaker: ") > opened_before  # the speaker was opened again
        # And the box still talks, through the PortAudio it initialised again.
        server.answers.append(AudioAnswer("Yes.", tone(server.output_rate, 0.4)))
        box.say(speech(0.6))
        reply = await box.command("talk", seconds=0.6)
        assert reply["turn"]["result"] == "answered", box.log()[-3000:]
        heard = await box.wait_heard(lambda h: np.abs(h).max(initial=0) > 3000, 5)
        assert np.abs(heard).max() > 3000
        audio = (await box.status())["audio"]
        assert audio["card_changes"] == 1  # a turn is no card change
        # every stream stopped on purpose gave its PortAudio thread's Python state back
        assert audio["thread_states_leaked"] == 0
    finally:
        code = await box.stop()
    assert code == 0
    assert "Traceback" not in box.log()
