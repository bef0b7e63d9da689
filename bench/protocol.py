#!/usr/bin/env python3
"""CPU cost of the protocol layer (base64 + JSON, both directions) per minute of audio.

Up:   24 kHz PCM16 mono in 20 ms ``input_audio_buffer.append`` events, built and encoded.
Down: 44.1 kHz PCM16 mono in 40 ms ``response.output_audio.delta`` frames, parsed and decoded.

    .venv/bin/python bench/protocol.py [--json] [--repeat N]
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import time

import numpy as np

from appliance.protocol.client_events import encode, input_audio_append
from appliance.protocol.parser import parse_server_event
from appliance.protocol.server_events import AudioDelta

UP_RATE, UP_CHUNK_MS = 24000, 20
DOWN_RATE, DOWN_CHUNK_MS = 44100, 40


def _pcm(rate: int, chunk_ms: int, seconds: int = 60) -> list[bytes]:
    rng = np.random.default_rng(1)
    samples = (rng.standard_normal(rate * seconds) * 3000).astype("<i2").tobytes()
    step = rate * chunk_ms // 1000 * 2
    return [samples[i : i + step] for i in range(0, len(samples), step)]


def audio_delta_frames() -> list[str]:
    """A minute of ``response.output_audio.delta`` frames, as the server sends them."""
    return [
        json.dumps(
            {
                "type": "response.output_audio.delta",
                "event_id": f"evt_{i}",
                "response_id": "resp_1",
                "item_id": "item_1",
                "output_index": 0,
                "content_index": 0,
                "delta": base64.b64encode(chunk).decode(),
            }
        )
        for i, chunk in enumerate(_pcm(DOWN_RATE, DOWN_CHUNK_MS))
    ]


def _cpu_ms(fn) -> float:
    start = time.process_time()
    fn()
    return (time.process_time() - start) * 1000


def measure(repeat: int) -> dict[str, float]:
    up_chunks = _pcm(UP_RATE, UP_CHUNK_MS)
    down_frames = audio_delta_frames()

    def up() -> None:
        for chunk in up_chunks:
            encode(input_audio_append(chunk))

    def down() -> None:
        for raw in down_frames:
            event = parse_server_event(raw)
            assert isinstance(event, AudioDelta)

    up_ms = statistics.median(_cpu_ms(up) for _ in range(repeat))
    down_ms = statistics.median(_cpu_ms(down) for _ in range(repeat))
    return {
        "cpu_ms_per_audio_min_up": round(up_ms, 2),
        "cpu_ms_per_audio_min_down": round(down_ms, 2),
        "up_events_per_min": len(up_chunks),
        "down_events_per_min": len(down_frames),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--repeat", type=int, default=7, help="runs; the median is reported")
    args = parser.parse_args()
    result = measure(args.repeat)
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"up   (24 kHz, {UP_CHUNK_MS} ms appends, {result['up_events_per_min']} events/min): "
        f"{result['cpu_ms_per_audio_min_up']:.1f} CPU-ms per minute of audio"
    )
    print(
        f"down (44.1 kHz, {DOWN_CHUNK_MS} ms deltas, {result['down_events_per_min']} events/min): "
        f"{result['cpu_ms_per_audio_min_down']:.1f} CPU-ms per minute of audio"
    )


if __name__ == "__main__":
    main()
