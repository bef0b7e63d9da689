"""The microphone's PortAudio side (appliance/audio/mic_stream.py) through REAL PyAudio and
PortAudio over the virtual ALSA devices (virtual_alsa.py)."""

from __future__ import annotations

import pyaudio

from appliance.audio import mic_stream
from appliance.audio.devices import ask_latency, set_default_latency
from appliance.audio.mic_stream import INPUT_HEADROOM_S


def test_the_capture_buffer_can_be_made_larger_than_pyaudios_default(virtual_alsa):
    """PyAudio opens an input with the device's low latency (two periods or less on ALSA); the
    headroom raises it in PortAudio's own table, and the stream opened next has the buffer."""
    pa = pyaudio.PyAudio()
    try:
        index = virtual_alsa.index_of(pa, "mic_fifo")
        before = pa.get_device_info_by_index(index)["defaultLowInputLatency"]
        assert before < 0.05  # what PyAudio would ask for: a stall longer than that loses audio

        def open_stream():
            return pa.open(
                rate=48000,
                channels=1,
                format=pyaudio.paInt16,
                input=True,
                input_device_index=index,
                frames_per_buffer=960,
                start=False,
                stream_callback=lambda *a: (None, pyaudio.paContinue),
            )

        plain = open_stream()
        plain_latency = plain.get_input_latency()
        plain.close()
        assert ask_latency(pa, index, INPUT_HEADROOM_S, output=False) is True
        assert pa.get_device_info_by_index(index)["defaultLowInputLatency"] >= INPUT_HEADROOM_S
        roomy = open_stream()
        assert roomy.get_input_latency() >= 0.8 * INPUT_HEADROOM_S > 2 * plain_latency
        roomy.close()
        assert (
            ask_latency(pa, index, INPUT_HEADROOM_S, output=False) is True
        )  # already: nothing to do
        set_default_latency(index, before, output=False)  # as it was: the table may outlive
    finally:
        pa.terminate()


def test_with_echo_cancellation_the_microphone_opens_with_the_headroom(virtual_alsa):
    """Hands-free (echo cancellation: the timed callback) asks for the larger buffer, and the
    canceller is told a sample waits one period (not the buffer's size PortAudio reports);
    push-to-talk keeps PortAudio's default."""
    from appliance.config.schema import AudioConfig

    port = mic_stream.MicPort(
        AudioConfig(input_device="mic_fifo", input_rate=48000, period_ms=20),
        pa_factory=None,
        owns_pa=True,
        channels=None,
        api_rate=24000,
    )
    for timed in (True, False):
        stream = port.open(lambda: True, timed, ring_s=1.0, loop=None, first_audio=print)
        try:
            latency = stream.stream.get_input_latency()
            if timed:
                assert latency >= 0.8 * INPUT_HEADROOM_S
                assert port.input_latency_s == 0.02
            else:
                assert latency < 0.1 and port.input_latency_s == latency
        finally:
            port.close(stream, terminate=True)  # a fresh PortAudio table for the next open
