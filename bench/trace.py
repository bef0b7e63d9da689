#!/usr/bin/env python3
"""What the Realtime trace (``realtime.trace_file``, ``--trace``) costs per minute of audio.

Floor: the protocol layer alone, no socket, as in bench/protocol.py's codec figures (up: 24 kHz
PCM16 in 100 ms ``input_audio_buffer.append`` events built and encoded; down: 44.1 kHz PCM16 in
40 ms ``response.output_audio.delta`` frames parsed and decoded). Project: the same, plus
``TraceWriter.sent`` / ``TraceWriter.received`` of every event, written to a real file. It
prints CPU-ms per minute of audio for both, the ratio, and the trace's bytes per minute of
audio (how long the 50 MB cap lasts).

    .venv/bin/python bench/trace.py [--json] [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from protocol import UP_CHUNK_MS, UP_RATE, _cpu_ms, _pcm, audio_delta_frames  # noqa: E402

from appliance.protocol.client_events import encode, input_audio_append  # noqa: E402
from appliance.protocol.parser import parse_server_event  # noqa: E402
from appliance.realtime.trace import DEFAULT_MAX_BYTES, TraceWriter  # noqa: E402


def measure(repeat: int) -> dict[str, float]:
    up_chunks = _pcm(UP_RATE, UP_CHUNK_MS)
    down_frames = audio_delta_frames()
    folder = Path(tempfile.mkdtemp(prefix="trace-bench-"))

    def up(trace: TraceWriter | None) -> None:
        for chunk in up_chunks:
            event = input_audio_append(chunk)
            encode(event)
            if trace is not None:
                trace.sent(event)

    def down(trace: TraceWriter | None) -> None:
        for raw in down_frames:
            parse_server_event(raw)
            if trace is not None:
                trace.received(raw)

    figures: dict[str, float] = {}
    for name, run in (("up", up), ("down", down)):
        floor = statistics.median(_cpu_ms(lambda run=run: run(None)) for _ in range(repeat))
        traced, sizes = [], []
        for i in range(repeat):
            trace = TraceWriter(folder / f"{name}{i}.jsonl", secrets=["sk-bench-secret"])
            traced.append(_cpu_ms(lambda run=run, trace=trace: run(trace)))
            trace.close()
            sizes.append(trace.bytes)
        project = statistics.median(traced)
        figures[f"cpu_ms_per_audio_min_{name}_floor"] = round(floor, 2)
        figures[f"cpu_ms_per_audio_min_{name}_traced"] = round(project, 2)
        figures[f"ratio_{name}"] = round(project / floor, 2)
        figures[f"trace_bytes_per_audio_min_{name}"] = statistics.median(sizes)
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
    per_min = figures["trace_bytes_per_audio_min_up"] + figures["trace_bytes_per_audio_min_down"]
    figures["audio_minutes_in_cap"] = round(DEFAULT_MAX_BYTES / per_min, 1)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--repeat", type=int, default=5, help="runs; the median is reported")
    args = parser.parse_args()
    result = measure(args.repeat)
    if args.json:
        print(json.dumps(result))
        return
    for name in ("up", "down"):
        print(
            f"{name:<5}floor {result[f'cpu_ms_per_audio_min_{name}_floor']:.1f}, traced "
            f"{result[f'cpu_ms_per_audio_min_{name}_traced']:.1f} CPU-ms per minute of audio "
            f"(x{result[f'ratio_{name}']}); "
            f"{result[f'trace_bytes_per_audio_min_{name}'] / 1000:.0f} kB of trace per minute"
        )
    print(f"the 50 MB cap holds {result['audio_minutes_in_cap']} minutes of audio both ways")


if __name__ == "__main__":
    main()
