#!/usr/bin/env python3
"""How to check a webhook's arguments against a hostile pattern: the candidates, measured.

The attack (issue 13, item 3): ``pattern: "^(a+)+$"`` against ``"a" * N + "!"``. Each
candidate validates the same schema and argument; times are the median of a few runs, in ms.

- ``jsonschema`` (Python ``re``, what the daemon used): backtracking, doubles per ``a``.
  Measured up to N=22 and extrapolated to N=29 (the review's figure: the daemon froze).
- ``regress`` (Rust, ECMAScript): also a backtracking engine.
- ``re2`` plugged into jsonschema's ``pattern`` keyword: linear.
- ``jsonschema-rs`` with ``RegexOptions`` (Rust's regex crate): linear.
- off the loop: a process pool worker with a time limit (a thread cannot help: ``re`` and
  jsonschema-rs hold the GIL); its cost is the round trip of a normal call and the
  worker's memory.

The floor: jsonschema validating a normal argument (``"aaaa"``). Also: the slowest pattern
jsonschema-rs accepts under our compiled-size limit, over the largest argument we allow.

    .venv/bin/python bench/schema_regex.py
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

import jsonschema

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import contextlib

from appliance.tools.arguments import MAX_ARGUMENT_BYTES, PATTERN_SIZE_LIMIT

PATTERN = "^(a+)+$"
SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "pattern": PATTERN}}}


def attack(n: int) -> dict:
    return {"name": "a" * n + "!"}


def median_ms(fn, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def python_jsonschema() -> None:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    floor = median_ms(lambda: list(validator.iter_errors({"name": "aaaa"})), 50)
    print(f"floor: jsonschema, a normal argument: {floor:.3f} ms")
    last = 0.0
    for n in (16, 18, 20, 22):
        last = median_ms(lambda n=n: list(validator.iter_errors(attack(n))), 3)
        print(f"jsonschema (re), N={n}: {last:.1f} ms")
    print(f"jsonschema (re), N=29: ~{last * 2**7 / 1000:.0f} s (extrapolated, x2 per a)")


def regress_engine() -> None:
    if importlib.util.find_spec("regress") is None:
        print("regress: not installed (pip install regress)")
        return
    import regress

    regex = regress.Regex(PATTERN)
    for n in (18, 20, 22, 24):
        print(f"regress, N={n}: {median_ms(lambda n=n: regex.find(attack(n)['name']), 3):.1f} ms")


def re2_engine(floor_ms: float) -> None:
    if importlib.util.find_spec("re2") is None:
        print("re2: not installed (pip install google-re2)")
        return
    import re2

    def pattern(validator, patrn, instance, schema):
        if validator.is_type(instance, "string") and not re2.search(patrn, instance):
            yield jsonschema.ValidationError(f"{instance!r} does not match {patrn!r}")

    cls = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": pattern})
    validator = cls(SCHEMA)
    ms = median_ms(lambda: list(validator.iter_errors(attack(29))), 20)
    print(f"jsonschema + re2, N=29: {ms:.3f} ms ({ms / floor_ms:.1f}x the floor)")


def rust_engine(floor_ms: float) -> None:
    import jsonschema_rs

    options = jsonschema_rs.RegexOptions(size_limit=PATTERN_SIZE_LIMIT)
    validator = jsonschema_rs.validator_for(SCHEMA, pattern_options=options)
    ms = median_ms(lambda: list(validator.iter_errors(attack(29))), 50)
    print(f"jsonschema-rs, N=29: {ms:.3f} ms ({ms / floor_ms:.2f}x the floor)")
    worst = (0.0, "")
    text = {"name": "a" * (MAX_ARGUMENT_BYTES - 20)}
    for inner in (10, 20, 30, 40, 60, 80):
        for outer in (10, 20, 40, 60, 80, 100):
            pat = f"(a{{{inner}}}){{{outer}}}"
            schema = {"properties": {"name": {"pattern": pat}}}
            try:
                v = jsonschema_rs.validator_for(schema, pattern_options=options)
            except jsonschema_rs.ValidationError:
                continue  # refused at load: over the size limit
            ms = max(median_ms(lambda v=v: v.is_valid(text), 2) for _ in range(2))
            worst = max(worst, (ms, pat))
    print(
        f"jsonschema-rs, slowest accepted (a{{i}}){{j}} pattern over {MAX_ARGUMENT_BYTES} "
        f"bytes: {worst[0]:.1f} ms ({worst[1]})"
    )


def _validate_in_worker(n: int) -> int:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    return len(list(validator.iter_errors(attack(n))))


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def process_pool(floor_ms: float) -> None:
    with concurrent.futures.ProcessPoolExecutor(1) as pool:
        start = time.perf_counter()
        pool.submit(os.getpid).result()
        spawn_ms = (time.perf_counter() - start) * 1000
        ms = median_ms(lambda: pool.submit(_validate_in_worker, 4).result(), 20)
        worker = pool.submit(os.getpid).result()
        rss = _rss_mb(worker)
        start = time.perf_counter()
        future = pool.submit(_validate_in_worker, 29)
        with contextlib.suppress(concurrent.futures.TimeoutError):
            future.result(timeout=0.1)
        limit_ms = (time.perf_counter() - start) * 1000
        for proc in pool._processes.values():  # the stuck worker must be killed
            proc.kill()
    print(
        f"off the loop (process pool): start {spawn_ms:.0f} ms, a normal call {ms:.2f} ms "
        f"({ms / floor_ms:.0f}x the floor), time limit hit after {limit_ms:.0f} ms, "
        f"worker RSS {rss:.0f} MB, and the stuck worker must be killed and respawned"
    )


def main() -> None:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    floor = median_ms(lambda: list(validator.iter_errors({"name": "aaaa"})), 50)
    python_jsonschema()
    regress_engine()
    re2_engine(floor)
    rust_engine(floor)
    process_pool(floor)


if __name__ == "__main__":
    main()
