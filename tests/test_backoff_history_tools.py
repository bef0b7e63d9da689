"""The pure parts of the link: backoff, the history budget, the log throttle, tool outputs."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from appliance.logs import LogThrottle
from appliance.protocol.client_events import FunctionTool
from appliance.protocol.server_events import FunctionCall
from appliance.realtime.backoff import Backoff
from appliance.realtime.history import ConversationHistory, Utterance
from appliance.realtime.tools import Tool, ToolRegistry

# ---- backoff ----------------------------------------------------------------------------


@pytest.mark.parametrize("r", [0.0, 0.5, 0.999])
def test_first_retry_within_half_a_second_then_doubling_to_the_cap(r):
    backoff = Backoff(rng=lambda: r)
    delays = [backoff.next_delay() for _ in range(12)]
    factor = 0.5 + 0.5 * r
    assert delays[0] <= 0.5
    assert delays[:7] == pytest.approx([factor * x for x in (0.5, 1, 2, 4, 8, 16, 30)])
    assert all(d == pytest.approx(30 * factor) for d in delays[6:])
    assert max(delays) <= 30


def test_jitter_spreads_delays():
    import random

    rng = random.Random(7)
    delays = {round(Backoff(rng=rng.random).next_delay(), 3) for _ in range(50)}
    assert len(delays) > 40
    assert all(0.25 <= d <= 0.5 for d in delays)


def test_reset_only_after_a_stable_connection():
    backoff = Backoff(rng=lambda: 1.0, stable_s=30)
    for _ in range(5):
        backoff.next_delay()
    backoff.connection_ended(lasted_s=3)  # flapping: keep backing off
    assert backoff.next_delay() == pytest.approx(16)
    backoff.connection_ended(lasted_s=31)
    assert backoff.next_delay() == pytest.approx(0.5)


def test_auth_retry_is_at_the_cap():
    assert Backoff(cap_s=30).at_cap() == 30


# ---- history ----------------------------------------------------------------------------


def test_replay_keeps_newest_within_budget_in_order():
    history = ConversationHistory(max_chars=12)
    for role, text in [
        ("user", "aaaa"),
        ("assistant", "bbbb"),
        ("user", "cccc"),
        ("assistant", "dd"),
    ]:
        history.add(role, text)
    assert history.replay() == [
        Utterance("assistant", "bbbb"),
        Utterance("user", "cccc"),
        Utterance("assistant", "dd"),
    ]


def test_replay_is_contiguous_a_long_old_item_stops_it():
    history = ConversationHistory(max_chars=10)
    history.add("user", "x" * 3)
    history.add("assistant", "y" * 20)  # too big: nothing older than it is replayed
    history.add("user", "z" * 5)
    assert history.replay() == [Utterance("user", "zzzzz")]


def test_empty_text_ignored_and_storage_bounded():
    history = ConversationHistory(max_chars=100, max_items=5)
    history.add("user", "   ")
    assert len(history) == 0
    for i in range(50):
        history.add("user", f"q{i}")
    assert len(history) == 5
    assert [u.text for u in history] == ["q45", "q46", "q47", "q48", "q49"]


def test_zero_budget_replays_nothing():
    history = ConversationHistory(max_chars=0)
    history.add("user", "hello")
    assert history.replay() == []


# ---- log throttle -----------------------------------------------------------------------


def test_throttle_one_line_per_kind_per_minute(caplog):
    now = [0.0]
    throttle = LogThrottle(60, clock=lambda: now[0])
    logger = logging.getLogger("t")
    with caplog.at_level(logging.INFO, logger="t"):
        for i in range(100):
            now[0] = i * 1.0  # one failure a second for 100 s
            throttle.log(logger, logging.WARNING, "net", "down")
            throttle.log(logger, logging.WARNING, "auth", "refused")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "down",
        "refused",
        "down (59 more like this in the last minute)",
        "refused (59 more like this in the last minute)",
    ]


# ---- tool registry ----------------------------------------------------------------------


def _call(name, arguments="{}"):
    return FunctionCall("call_1", name, arguments)


async def _slow(_args):
    await asyncio.sleep(5)


def _broken(_args):
    raise RuntimeError("sensor unplugged")


REGISTRY = ToolRegistry(
    [
        Tool(FunctionTool("echo", "echo"), lambda args: {"got": args}),
        Tool(FunctionTool("text", "text"), lambda args: "plain"),
        Tool(FunctionTool("slow", "slow"), _slow, timeout_s=0.05),
        Tool(FunctionTool("broken", "broken"), _broken),
        Tool(FunctionTool("weird", "weird"), lambda args: object()),
    ],
    server_side=[FunctionTool("web_search", "", "{}")],
)


@pytest.mark.parametrize(
    ("call", "output"),
    [
        (_call("echo", '{"a": 1}'), {"got": {"a": 1}}),
        (_call("echo", ""), {"got": {}}),
        (_call("nope"), {"error": "unknown tool: nope"}),
        (_call("echo", "{not json"), {"error": "arguments are not valid JSON"}),
        (_call("echo", "[1]"), {"error": "arguments must be a JSON object"}),
        (_call("slow"), {"error": "timed out after 0.05 s"}),
        (_call("broken"), {"error": "RuntimeError: sensor unplugged"}),
        (_call("weird"), {"error": "the tool returned a result that is not JSON"}),
    ],
)
async def test_every_outcome_is_a_json_string(call, output):
    result = await REGISTRY.call(call)
    assert isinstance(result, str)
    assert json.loads(result) == output


async def test_string_results_pass_unchanged_and_specs_include_server_tools():
    assert await REGISTRY.call(_call("text")) == "plain"
    assert [s.name for s in REGISTRY.specs()][-1] == "web_search"
    assert REGISTRY.answered_by_server("web_search") and not REGISTRY.answered_by_server("echo")
    with pytest.raises(ValueError, match="registered twice"):
        REGISTRY.add(Tool(FunctionTool("echo", "again"), lambda a: a))


# ---- answer transcripts -----------------------------------------------------------------


def test_answer_words_prefer_done_then_deltas_then_item_text():
    from appliance.realtime.history import AnswerWords

    answers = AnswerWords()
    answers.delta("a", "Hel")
    answers.delta("a", "lo")
    answers.done("a", "Hello!")
    answers.delta("b", "Only ")
    answers.delta("b", "deltas")
    assert answers.finish("a", "fallback") == "Hello!"
    assert answers.finish("b", "fallback") == "Only deltas"
    assert answers.finish("c", "from the item") == "from the item"
    answers.delta("d", "open")
    answers.done("e", "also open")
    assert answers.finish_all() == ["open", "also open"]
    assert answers.finish_all() == []


def test_answer_words_on_two_channels_are_one_answer():
    """A server that sends the words as output_text and as the audio transcript: shown live
    once (on the channel that spoke first), kept once (the audio transcript preferred)."""
    from appliance.realtime.history import AnswerWords

    words = AnswerWords()
    shown = [
        words.delta("a", "Сегодня", "text"),
        words.delta("a", "Сегодня", "audio"),
        words.delta("a", " солнечно.", "text"),
        words.delta("a", " солнечно.", "audio"),
    ]
    assert "".join(s for s in shown if s) == "Сегодня солнечно."
    words.done("a", "Сегодня солнечно!", "text")
    words.done("a", "Сегодня солнечно.", "audio")
    assert words.joined() == "Сегодня солнечно."
    words.delta("b", "Потом", "text")  # a second item with text only
    assert words.joined() == "Сегодня солнечно. Потом"
    assert words.finish("a") == "Сегодня солнечно."


def test_history_keeps_a_late_transcript_in_its_place():
    from appliance.realtime.history import ConversationHistory

    history = ConversationHistory(1000)
    history.reserve("item_q1")  # committed; the transcript is still on its way
    history.add("assistant", "Noon.")
    history.add("user", "What time is it?", "item_q1")
    history.reserve("item_q2")  # never transcribed: not replayed
    assert [(u.role, u.text) for u in history.replay()] == [
        ("user", "What time is it?"),
        ("assistant", "Noon."),
    ]
    assert history.recap().endswith("User: What time is it?\nAssistant: Noon.")
    assert len(history) == 2
