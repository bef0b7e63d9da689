"""Answer scripts, payload builders and answer playback for the local Realtime test server.

The server (tests/realtime_server.py) plays one answer script per `response.create`. The builders
here produce GA-shaped JSON objects (see /work/shared/realtime-protocol.md §2-§4, §6).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class AudioAnswer:
    """An assistant message: audio deltas interleaved with transcript deltas.

    `pcm` is PCM16 mono at the server's output rate; None means a 0.5 s 440 Hz tone.
    With `text=True` the answer is text only (`response.output_text.*`, no audio).
    """

    transcript: str
    pcm: bytes | None = None
    chunk_ms: int = 40
    text: bool = False


@dataclass
class ToolCallAnswer:
    """A response whose output is one function_call item per (name, arguments JSON) pair."""

    calls: list[tuple[str, str]]


@dataclass
class ErrorAnswer:
    """A response that fails: response.created then response.done status "failed"."""

    code: str
    message: str
    type: str = "server_error"


Answer = AudioAnswer | ToolCallAnswer | ErrorAnswer

# GA type names -> beta type names (protocol §6). conversation.item.done has no beta name:
# in beta mode it is not sent at all.
BETA_NAMES = {
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
    "response.output_text.delta": "response.text.delta",
    "response.output_text.done": "response.text.done",
    "conversation.item.added": "conversation.item.created",
}


def tone(rate: int, seconds: float = 0.5, freq: float = 440.0, amplitude: float = 0.3) -> bytes:
    """A sine tone as PCM16 little-endian mono bytes."""
    n = round(rate * seconds)
    t = np.arange(n, dtype=np.float64) / rate
    samples = np.round(np.sin(2 * np.pi * freq * t) * amplitude * 32767)
    return samples.astype("<i2").tobytes()


def chunk_bytes(pcm: bytes, rate: int, chunk_ms: int) -> list[bytes]:
    """Split PCM16 audio into chunks of chunk_ms (the last one may be shorter)."""
    size = max(2, rate * max(1, chunk_ms) // 1000 * 2)
    return [pcm[i : i + size] for i in range(0, len(pcm), size)]


def split_words(text: str, parts: int) -> list[str]:
    """Spread the words of `text` over `parts` strings (in order; ''.join gives back `text`)."""
    parts = max(1, parts)
    words = re.findall(r"\s*\S+", text)
    if not words:
        return [text] + [""] * (parts - 1)
    words[-1] += text[len("".join(words)) :]  # trailing whitespace, if any
    out = [""] * parts
    for i, word in enumerate(words):
        out[i * parts // len(words)] += word
    return out


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Merge `update` into `base` in place: dicts recursively, anything else (None too) replaces."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def audio_side(session: Any, side: str) -> dict[str, Any] | None:
    """`session.audio.<side>` if it is a dict, else None."""
    audio = session.get("audio") if isinstance(session, dict) else None
    found = audio.get(side) if isinstance(audio, dict) else None
    return found if isinstance(found, dict) else None


def default_session(
    session_id: str, model: str, output_rate: int, voice: str = "marina"
) -> dict[str, Any]:
    return {
        "id": session_id,
        "type": "realtime",
        "object": "realtime.session",
        "model": model,
        "output_modalities": ["audio"],
        "instructions": "",
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": 0.5,
                    "prefix_padding_ms": 300,
                    "silence_duration_ms": 500,
                    "idle_timeout_ms": None,
                    "create_response": True,
                    "interrupt_response": True,
                },
            },
            "output": {"format": {"type": "audio/pcm", "rate": output_rate}, "voice": voice},
        },
        "tools": [],
    }


def user_audio_item(item_id: str, transcript: str | None = None) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "object": "realtime.item",
        "role": "user",
        "status": "completed",
        "content": [{"type": "input_audio", "transcript": transcript}],
    }


def assistant_item(item_id: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "object": "realtime.item",
        "role": "assistant",
        "status": "in_progress",
        "content": [],
    }


def function_call_item(item_id: str, call_id: str, name: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "object": "realtime.item",
        "status": "in_progress",
        "call_id": call_id,
        "name": name,
        "arguments": "",
    }


def usage(output_items: int = 1) -> dict[str, Any]:
    out = 20 * max(1, output_items)
    return {
        "total_tokens": 100 + out,
        "input_tokens": 100,
        "output_tokens": out,
        "input_token_details": {"text_tokens": 40, "audio_tokens": 60, "cached_tokens": 0},
        "output_token_details": {"text_tokens": out // 4, "audio_tokens": out - out // 4},
    }


def response_object(
    response_id: str,
    status: str,
    output: list[dict[str, Any]],
    modalities: list[str],
    session: dict[str, Any],
    status_details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    audio_out = session.get("audio", {}).get("output", {})
    return {
        "id": response_id,
        "object": "realtime.response",
        "status": status,
        "status_details": status_details,
        "output": copy.deepcopy(output),
        "conversation_id": "conv_1",
        "output_modalities": list(modalities),
        "max_output_tokens": "inf",
        "metadata": None,
        "audio": {"output": {"format": audio_out.get("format"), "voice": audio_out.get("voice")}},
        "usage": usage(len(output)) if status != "in_progress" else None,
    }


# --------------------------------------------------------------------- playing answers
#
# `conn` below is the server's per-connection state (realtime_server._Conn): it provides
# `server`, `emit()`, `send_raw()`, `abort()`, `request_close()`, `items`, `last_item_id`,
# `audio_sent`, `audio_index`, `call_ids`, `response`, `output_rate` and `record.session`; the
# server's `profile` (tests/realtime_profiles.py) decides whether an audio answer's words also
# go out as output_text and whether function_call_arguments.done names the function.


class Gone(Exception):
    """The connection can no longer be written to (closed, aborted or silent)."""


@dataclass
class Fault:
    kind: str  # "drop" (abort the TCP connection) or "close" (WebSocket close frame)
    after: int
    code: int = 1011


@dataclass
class ItemState:
    """An output item being generated, and which of its *.done events were sent."""

    item: dict[str, Any]
    kind: str  # "audio" | "text" | "function_call"
    output_index: int
    previous_item_id: str | None
    response_id: str
    text: str = ""  # transcript / text / arguments sent so far
    sent: set[str] = field(default_factory=set)
    text_too: bool = False  # an audio item whose words also go out as response.output_text.*
    audio_index: int = 0  # the content_index of the audio part (> 0: a text part comes first)


@dataclass
class ResponseState:
    id: str
    task: asyncio.Task[None] | None = None
    created: bool = False
    modalities: list[str] = field(default_factory=lambda: ["audio"])
    output: list[dict[str, Any]] = field(default_factory=list)
    current: ItemState | None = None


async def emit_response(
    conn: Any,
    resp: ResponseState,
    status: str,
    type_: str = "response.done",
    details: dict[str, Any] | None = None,
) -> None:
    if type_ == "response.done" and conn.response is resp:
        conn.response = None  # a response.create right after response.done is accepted
    session = conn.record.session
    body = response_object(resp.id, status, resp.output, resp.modalities, session, details)
    await conn.emit(type_, response=body)


async def play_response(conn: Any, resp: ResponseState, answer: Answer) -> None:
    """The task behind one response.create."""
    server = conn.server
    try:
        if server.answer_delay_s > 0:
            await asyncio.sleep(server.answer_delay_s)
        for frame in server.take_junk():
            await conn.send_raw(frame)
        if isinstance(answer, AudioAnswer) and answer.text:
            resp.modalities = ["text"]
        resp.created = True
        await emit_response(conn, resp, "in_progress", "response.created")
        if isinstance(answer, ErrorAnswer):
            error = {"type": answer.type, "code": answer.code, "message": answer.message}
            await emit_response(conn, resp, "failed", details={"type": "failed", "error": error})
            return
        if isinstance(answer, ToolCallAnswer):
            await _play_tool_calls(conn, resp, answer)
        elif not await _play_message(conn, resp, answer):
            return  # the connection was killed mid-answer
        await emit_response(conn, resp, "completed")
    except Gone:
        if conn.response is resp:
            conn.response = None


async def cancel_response(conn: Any, resp: ResponseState, reason: str = "client_cancelled") -> None:
    """Stop the response task and send what a cancelled response still sends."""
    if conn.response is resp:
        conn.response = None
    if resp.task is not None:
        resp.task.cancel()
        await asyncio.wait([resp.task])
    if not resp.created:
        await emit_response(conn, resp, "in_progress", "response.created")
    if resp.current is not None:
        await finish_item(conn, resp.current, "incomplete")
    details = {"type": "cancelled", "reason": reason}
    await emit_response(conn, resp, "cancelled", details=details)


async def _play_message(conn: Any, resp: ResponseState, answer: AudioAnswer) -> bool:
    server = conn.server
    item_id = server.new_id("item")
    item = assistant_item(item_id)
    kind = "text" if answer.text else "audio"
    st = ItemState(item, kind, len(resp.output), conn.last_item_id, resp.id)
    # yandex-2026: the words of an audio answer come as output_text AND as its audio transcript.
    st.text_too = kind == "audio" and server.profile.text_on_both_channels
    st.audio_index = server.audio_content_index if kind == "audio" else 0
    await _start_item(conn, resp, st)
    ids = {"response_id": resp.id, "item_id": item_id, "output_index": st.output_index}
    if st.audio_index > 0:  # a text part first, at content_index 0
        st.sent.add("text_part")
        part0 = {"type": "text", "text": ""}
        await conn.emit("response.content_part.added", **ids, content_index=0, part=part0)
    ids["content_index"] = st.audio_index
    part = {"type": "text", "text": ""} if answer.text else {"type": "audio", "transcript": ""}
    st.sent.add("part")
    await conn.emit("response.content_part.added", **ids, part=part)
    if answer.text:
        for piece in split_words(answer.transcript, len(answer.transcript.split())):
            st.text += piece
            await conn.emit("response.output_text.delta", **ids, delta=piece)
    else:
        fault = server.take_fault()
        pcm = answer.pcm if answer.pcm is not None else tone(conn.output_rate)
        chunks = chunk_bytes(pcm, conn.output_rate, answer.chunk_ms)
        words = split_words(answer.transcript, len(chunks))
        conn.audio_sent[item_id] = 0
        conn.audio_index[item_id] = st.audio_index
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i, chunk in enumerate(chunks):
            if server.pace_realtime and i:
                await asyncio.sleep(max(0.0, start + i * answer.chunk_ms / 1000 - loop.time()))
            conn.audio_sent[item_id] += len(chunk)  # counted before sending: never too low
            delta = base64.b64encode(chunk).decode("ascii")
            await conn.emit("response.output_audio.delta", **ids, delta=delta)
            if words[i]:
                await _words(conn, st, ids, words[i])
            if fault is not None and i + 1 >= min(fault.after, len(chunks)):
                if conn.response is resp:
                    conn.response = None
                if fault.kind == "drop":
                    conn.abort()
                else:
                    conn.request_close(fault.code)
                return False
        for rest in words[len(chunks) :]:  # only when there is no audio at all
            await _words(conn, st, ids, rest)
    await finish_item(conn, st, "completed")
    resp.current = None
    return True


async def _words(conn: Any, st: ItemState, ids: dict[str, Any], words: str) -> None:
    st.text += words
    if st.text_too:
        await conn.emit("response.output_text.delta", **{**ids, "content_index": 0}, delta=words)
    await conn.emit("response.output_audio_transcript.delta", **ids, delta=words)


async def _play_tool_calls(conn: Any, resp: ResponseState, answer: ToolCallAnswer) -> None:
    server = conn.server
    for name, arguments in answer.calls:
        call_id = server.new_id("call")
        conn.call_ids.add(call_id)
        server.call_ids.append(call_id)
        item = function_call_item(server.new_id("item"), call_id, name)
        st = ItemState(item, "function_call", len(resp.output), conn.last_item_id, resp.id)
        await _start_item(conn, resp, st)
        ids = {"response_id": resp.id, "item_id": item["id"], "output_index": st.output_index}
        ids["call_id"] = call_id
        half = len(arguments) // 2
        for piece in (arguments[:half], arguments[half:]):
            st.text += piece
            await conn.emit("response.function_call_arguments.delta", **ids, delta=piece)
        item["arguments"] = arguments
        if server.profile.name_in_arguments_done:  # not in Yandex's schema
            ids["name"] = name
        await conn.emit("response.function_call_arguments.done", **ids, arguments=arguments)
        await finish_item(conn, st, "completed")
        resp.current = None


async def _start_item(conn: Any, resp: ResponseState, st: ItemState) -> None:
    resp.output.append(st.item)
    resp.current = st
    conn.items[st.item["id"]] = st.item
    item = copy.deepcopy(st.item)
    await conn.emit(
        "response.output_item.added", response_id=resp.id, output_index=st.output_index, item=item
    )
    await conn.emit("conversation.item.added", previous_item_id=st.previous_item_id, item=item)


async def finish_item(conn: Any, st: ItemState, status: str) -> None:
    """Send the *.done events of an item that were not sent yet (also on cancel)."""

    async def once(type_: str, key: str = "", **fields: Any) -> None:
        if (key or type_) not in st.sent:
            st.sent.add(key or type_)
            await conn.emit(type_, **fields)

    ids = {"response_id": st.response_id, "output_index": st.output_index}
    if st.kind in ("audio", "text") and "part" in st.sent:
        beta = conn.server.beta_names
        text_ids = {**ids, "item_id": st.item["id"], "content_index": 0}
        part_ids = {**text_ids, "content_index": st.audio_index}
        contents = []
        if st.kind == "audio":
            await once("response.output_audio.done", **part_ids)
            if st.text_too:
                await once("response.output_text.done", **text_ids, text=st.text)
            await once("response.output_audio_transcript.done", **part_ids, transcript=st.text)
            if "text_part" in st.sent:  # the text part before the audio (audio_index > 0)
                text = st.text if st.text_too else ""
                part0 = {"type": "text", "text": text}
                await once("response.content_part.done", "text_part_done", **text_ids, part=part0)
                contents.append({"type": "text" if beta else "output_text", "text": text})
            part = {"type": "audio", "transcript": st.text}
            content = {"type": "audio" if beta else "output_audio", "transcript": st.text}
        else:
            await once("response.output_text.done", **part_ids, text=st.text)
            part = {"type": "text", "text": st.text}
            content = {"type": "text" if beta else "output_text", "text": st.text}
        await once("response.content_part.done", **part_ids, part=part)
        st.item["content"] = [*contents, content]
    st.item["status"] = status
    item = copy.deepcopy(st.item)
    await once("response.output_item.done", **ids, item=item)
    await once("conversation.item.done", previous_item_id=st.previous_item_id, item=item)
