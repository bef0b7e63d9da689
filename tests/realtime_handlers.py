"""What the test server does with each client event: the handlers of RealtimeTestServer.

A mixin of tests/realtime_server.py's RealtimeTestServer (which owns the attributes named here:
`profile`, the scenario attributes and the recordings); split out so that the server module
keeps the lifecycle, the faults and the connections, and this one the protocol behaviour:
session checks per profile (tests/realtime_profiles.py), input audio at the session's rate and
server VAD, commits and delayed transcripts, conversation items, truncation and responses.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import copy
import math
from typing import TYPE_CHECKING, Any

import numpy as np

try:  # importable both as `tests.realtime_handlers` and as a top-level module
    from . import realtime_profiles as rp
    from . import realtime_scripts as rs
except ImportError:
    import realtime_profiles as rp  # type: ignore[no-redef]
    import realtime_scripts as rs  # type: ignore[no-redef]

if TYPE_CHECKING:
    from realtime_server import _Conn

AudioAnswer = rs.AudioAnswer
Answer = rs.Answer
tone = rs.tone

INPUT_RATE = 24000  # the default input rate; a session.update may name another one
MIN_COMMIT_MS = 100
VAD_FRAME_MS = 10
VAD_LEVEL = 0.02  # server VAD: a frame is speech if its RMS (full scale 1) > threshold x this


class CommittedAudio(bytes):
    """The PCM16 bytes of one commit (compares equal to plain bytes), with its input `rate`."""

    rate: int
    item_id: str
    connection: int

    def __new__(cls, audio: bytes, rate: int, item_id: str, connection: int) -> CommittedAudio:
        obj = super().__new__(cls, audio)
        obj.rate, obj.item_id, obj.connection = rate, item_id, connection
        return obj

    @property
    def ms(self) -> float:
        return len(self) * 1000 / (2 * self.rate)


class ClientEventHandlers:
    """The client-event handlers (`_on_<event>`), mixed into RealtimeTestServer."""

    async def _late_audio(self, conn: _Conn, response: rs.ResponseState) -> None:
        """A real server may still send audio after the speech that interrupts it: with
        ``late_deltas_on_interrupt`` > 0, that many deltas of the current item go out first."""
        current = response.current
        if not self.late_deltas_on_interrupt or current is None or current.kind != "audio":
            return
        chunk = rs.tone(conn.output_rate, 0.04, freq=880.0)
        item_id = current.item["id"]
        for _ in range(self.late_deltas_on_interrupt):
            conn.audio_sent[item_id] = conn.audio_sent.get(item_id, 0) + len(chunk)
            await conn.emit(
                "response.output_audio.delta",
                response_id=current.response_id,
                item_id=item_id,
                output_index=current.output_index,
                content_index=current.audio_index,
                delta=base64.b64encode(chunk).decode("ascii"),
            )

    async def _on_session_update(self, conn: _Conn, event: dict[str, Any]) -> None:
        update = event.get("session")
        refusal: rp.Refusal | None = rp.check_session(self.profile, update)
        close_code, send_error = None, True
        if refusal is None and self._session_refusals:
            refusal, close_code, send_error = self._session_refusals.popleft()
        if refusal is not None:
            if send_error:
                await conn.refuse(refusal, event)
            if close_code is not None:
                conn.request_close(close_code)
            return
        assert isinstance(update, dict)
        update = {k: v for k, v in update.items() if k not in ("id", "object")}
        audio_in = rs.audio_side(update, "input")
        if audio_in is not None and "turn_detection" in audio_in:
            conn.vad_chosen = True
            if self.keeps_server_vad and audio_in["turn_detection"] is None:
                update = copy.deepcopy(update)
                del rs.audio_side(update, "input")["turn_detection"]  # type: ignore[index]
        if self.keeps_server_vad:
            conn.vad_chosen = True
        session = conn.record.session
        rs.deep_merge(session, update)
        # The server's output rate wins: the client must read it from session.updated.
        if not isinstance(session.get("audio"), dict):
            session["audio"] = {}
        audio = session["audio"]
        if not isinstance(audio.get("output"), dict):
            audio["output"] = {}
        fmt = audio["output"].get("format")
        fmt = fmt if isinstance(fmt, dict) else {}
        audio["output"]["format"] = {**fmt, "type": "audio/pcm", "rate": conn.output_rate}
        await conn.emit("session.updated", session=copy.deepcopy(session))

    async def _on_append(self, conn: _Conn, event: dict[str, Any]) -> None:
        try:
            raw = base64.b64decode(event.get("audio"), validate=True)  # type: ignore[arg-type]
        except (binascii.Error, ValueError, TypeError):
            await conn.error("invalid_base64", "audio is not valid base64", "audio", event)
            return
        conn.buffer += raw
        audio_input = conn.record.session.get("audio", {}).get("input", {})
        vad = audio_input.get("turn_detection") if isinstance(audio_input, dict) else None
        if conn.vad_chosen and isinstance(vad, dict) and vad.get("type") == "server_vad":
            await self._vad(conn, raw, vad)

    async def _vad(self, conn: _Conn, raw: bytes, vad: dict[str, Any]) -> None:
        """Server VAD, by energy: speech_started when a frame is loud, speech_stopped after
        silence_duration_ms of quiet, then the commit and (create_response) the next answer;
        with interrupt_response, speech during a response cancels it (turn_detected)."""
        rate = conn.input_rate
        frame_bytes = rate * 2 * VAD_FRAME_MS // 1000
        level = float(vad.get("threshold") or 0.5) * VAD_LEVEL * 32768
        padding_ms = int(vad.get("prefix_padding_ms") or 0)
        silence_ms = int(vad.get("silence_duration_ms") or 500)
        conn.vad_rest += raw
        while len(conn.vad_rest) >= frame_bytes:
            frame = np.frombuffer(bytes(conn.vad_rest[:frame_bytes]), dtype="<i2")
            del conn.vad_rest[:frame_bytes]
            conn.vad_ms += VAD_FRAME_MS
            loud = float(np.sqrt(np.mean(frame.astype(np.float64) ** 2))) > level
            if conn.vad_item is None:
                if not loud:
                    continue
                conn.vad_item, conn.vad_quiet_ms = self.new_id("item"), 0
                start_ms = max(0, conn.vad_ms - VAD_FRAME_MS - padding_ms)
                await conn.emit(
                    "input_audio_buffer.speech_started",
                    item_id=conn.vad_item,
                    audio_start_ms=start_ms,
                )
                if vad.get("interrupt_response") and conn.response is not None:
                    await self._late_audio(conn, conn.response)
                    await rs.cancel_response(conn, conn.response, "turn_detected")
                continue
            conn.vad_quiet_ms = 0 if loud else conn.vad_quiet_ms + VAD_FRAME_MS
            if conn.vad_quiet_ms < silence_ms:
                continue
            item_id, conn.vad_item = conn.vad_item, None
            await conn.emit(
                "input_audio_buffer.speech_stopped", item_id=item_id, audio_end_ms=conn.vad_ms
            )
            await self._commit_buffer(conn, item_id)
            if vad.get("create_response", True) and conn.response is None:
                self._start_response(conn)
        if conn.vad_item is None:  # between utterances only the prefix padding is kept
            keep = rate * 2 * padding_ms // 1000
            del conn.buffer[: max(0, len(conn.buffer) - keep)]

    async def _on_commit(self, conn: _Conn, event: dict[str, Any]) -> None:
        ms = len(conn.buffer) * 1000 / (2 * conn.input_rate)
        if ms < MIN_COMMIT_MS:
            message = (
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"100ms of audio, but buffer only has {ms:.2f}ms of audio."
            )
            await conn.error("input_audio_buffer_commit_empty", message, event=event)
            return
        item_id, conn.vad_item = conn.vad_item, None  # the speech server VAD had started, if any
        conn.vad_quiet_ms = 0
        await self._commit_buffer(conn, item_id)

    async def _commit_buffer(self, conn: _Conn, item_id: str | None = None) -> None:
        rate = conn.input_rate
        ms = len(conn.buffer) * 1000 / (2 * rate)
        item_id = item_id or self.new_id("item")
        self.committed_audio.append(
            CommittedAudio(bytes(conn.buffer), rate, item_id, conn.record.index)
        )
        conn.buffer.clear()
        transcript = (
            self.user_transcripts.popleft() if self.user_transcripts else f"user audio {ms:.0f} ms"
        )
        previous = conn.last_item_id
        item = rs.user_audio_item(item_id)
        conn.items[item_id] = item
        conn.last_commit = item_id
        await conn.emit("input_audio_buffer.committed", item_id=item_id, previous_item_id=previous)
        await conn.emit(
            "conversation.item.added", previous_item_id=previous, item=copy.deepcopy(item)
        )
        if not self.sends_transcripts:  # a server that never says what it heard
            item["content"][0]["transcript"] = transcript
        elif self.transcript_delay_s > 0:
            task = self.spawn(self._transcribe(conn, item, transcript, ms, self.transcript_delay_s))
            conn.pending_transcripts[item_id] = task
        else:
            await self._transcribe(conn, item, transcript, ms, 0.0)

    async def _transcribe(
        self, conn: _Conn, item: dict[str, Any], transcript: str, ms: float, delay_s: float
    ) -> None:
        """Send the committed item's ...input_audio_transcription.completed (after delay_s)."""
        try:
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            item["content"][0]["transcript"] = transcript
            fields: dict[str, Any] = {"item_id": item["id"], "content_index": 0}
            fields["transcript"] = transcript
            if self.profile.usage_in_transcription:
                fields["usage"] = {"type": "duration", "seconds": round(ms / 1000, 3)}
            with contextlib.suppress(rs.Gone):
                await conn.emit("conversation.item.input_audio_transcription.completed", **fields)
        finally:
            conn.pending_transcripts.pop(item["id"], None)

    async def _on_clear(self, conn: _Conn, event: dict[str, Any]) -> None:
        if not self.profile.clear_supported:
            # Yandex's reference error for it has no code at all (shared/traces F).
            message = "input_audio_buffer.clear is not supported"
            await conn.error(None, message, event=event)
            return  # and the buffer keeps its audio
        conn.buffer.clear()
        await conn.emit("input_audio_buffer.cleared")

    async def _on_item_create(self, conn: _Conn, event: dict[str, Any]) -> None:
        item = event.get("item")
        if not isinstance(item, dict):
            await conn.error("missing_required_parameter", "item is required", "item", event)
            return
        if item.get("type") == "function_call_output" and item.get("call_id") not in conn.call_ids:
            message = f"Tool call ID {item.get('call_id')!r} not found in conversation."
            await conn.error("invalid_value", message, "item.call_id", event)
            return
        if not self.profile.assistant_items and item.get("role") == "assistant":
            await conn.error(None, rp.ASSISTANT_ITEM_MESSAGE, event=event)
            if self.assistant_item_close_code is not None:
                conn.request_close(self.assistant_item_close_code)
            return
        item = copy.deepcopy(item)
        if not item.get("id"):
            item["id"] = self.new_id("item")
        item.setdefault("object", "realtime.item")
        item.setdefault("status", "completed")
        previous = event.get("previous_item_id") or conn.last_item_id
        conn.items[item["id"]] = item
        conn.record.conversation.append(item)
        await conn.emit(
            "conversation.item.added", previous_item_id=previous, item=copy.deepcopy(item)
        )

    async def _on_item_delete(self, conn: _Conn, event: dict[str, Any]) -> None:
        item_id = event.get("item_id")
        if conn.items.pop(item_id, None) is None:  # type: ignore[arg-type]
            await conn.error("item_not_found", f"Item {item_id!r} not found", "item_id", event)
            return
        await conn.emit("conversation.item.deleted", item_id=item_id)

    async def _on_item_retrieve(self, conn: _Conn, event: dict[str, Any]) -> None:
        item = conn.items.get(event.get("item_id"))  # type: ignore[arg-type]
        if item is None:
            message = f"Item {event.get('item_id')!r} not found"
            await conn.error("item_not_found", message, "item_id", event)
            return
        await conn.emit("conversation.item.retrieved", item=copy.deepcopy(item))

    async def _on_truncate(self, conn: _Conn, event: dict[str, Any]) -> None:
        item_id = event.get("item_id")
        end = event.get("audio_end_ms")
        index = event.get("content_index")
        if item_id not in conn.items:
            await conn.error("item_not_found", f"Item {item_id!r} not found", "item_id", event)
            return
        if item_id not in conn.audio_sent:
            message = "Only assistant messages with audio can be truncated"
            await conn.error("invalid_value", message, "item_id", event)
            return
        audio_index = conn.audio_index.get(item_id, 0)
        if index != audio_index:
            message = f"content_index must be {audio_index} (the audio content of {item_id})"
            await conn.error("invalid_value", message, "content_index", event)
            return
        duration_ms = conn.audio_sent[item_id] * 1000 / (2 * conn.output_rate)
        if not isinstance(end, int) or isinstance(end, bool) or end < 0:
            message = "audio_end_ms must be a non-negative integer"
            await conn.error("invalid_value", message, "audio_end_ms", event)
            return
        if end > math.ceil(duration_ms):
            message = f"Audio content of {duration_ms:.0f}ms is already shorter than {end}ms"
            await conn.error("invalid_value", message, "audio_end_ms", event)
            return
        truncation = {"item_id": item_id, "content_index": index, "audio_end_ms": end}
        self.truncations.append({"connection": conn.record.index, **truncation})
        await conn.emit("conversation.item.truncated", **truncation)

    async def _on_response_create(self, conn: _Conn, event: dict[str, Any]) -> None:
        if conn.response is not None:
            message = (
                f"Conversation already has an active response in progress: {conn.response.id}. "
                "Wait until the response is finished before creating a new one."
            )
            await conn.error("conversation_already_has_active_response", message, event=event)
            return
        refusal = rp.check_response(self.profile, event.get("response"))
        if refusal is not None:
            await conn.refuse(refusal, event)
            return
        pending = conn.last_commit
        if self.profile.empty_answer_before_transcript and pending in conn.pending_transcripts:
            self.early_responses.append({"connection": conn.record.index, "item_id": pending})
            early = self.early_answer or AudioAnswer(
                rp.EMPTY_QUESTION_TRANSCRIPT, pcm=tone(conn.output_rate, 0.2, freq=220.0)
            )
            self._start_response(conn, early)
            return
        self._start_response(conn)

    def _start_response(self, conn: _Conn, answer: Answer | None = None) -> None:
        if answer is None:
            answer = self.answers.popleft() if self.answers else self.default_answer
        resp = rs.ResponseState(self.new_id("resp"))
        conn.response = resp
        resp.task = self.spawn(rs.play_response(conn, resp, answer))

    async def _on_response_cancel(self, conn: _Conn, event: dict[str, Any]) -> None:
        resp = conn.response
        wanted = event.get("response_id")
        if resp is None or (wanted and wanted != resp.id):
            message = "Cancellation failed: no active response found"
            await conn.error("response_cancel_not_active", message, event=event)
            return
        if self.cancel_delay_s:  # a slow server: the answer streams on a while (paced)
            await asyncio.sleep(self.cancel_delay_s)
            if conn.response is not resp:
                return
        await rs.cancel_response(conn, resp)
