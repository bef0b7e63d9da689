"""``appliance ask QUESTION.wav -o ANSWER.wav``: one spoken question, one spoken answer, no speaker.

The question (any format :mod:`appliance.audio.sources` reads) is converted to mono PCM16 at the
API's input rate (``realtime.input_rate``) with a real resampler while the link connects,
streamed in 100 ms appends, committed, and answered; each answer's words are printed once,
however many channels the server sends them on. The answer's audio is written exactly as
received (mono, 16-bit, at the session's output rate). If the link dies before the answer is
whole, the question is asked again on a new session (at most ``retries`` times), so the file
always holds one whole answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sys
from pathlib import Path
from typing import TextIO

from appliance.audio.prefetch import BlockPrefetch
from appliance.audio.sources import AudioFileError, QuestionSource
from appliance.audio.wavfile import write_wav
from appliance.config import ApiKey, Config
from appliance.protocol import server_events as ev
from appliance.realtime.history import AnswerWords
from appliance.realtime.link_events import AuthRejected, Connected, Disconnected, SetupRejected
from appliance.realtime.session import NotConnected
from appliance.realtime.supervisor import LinkSettings, SessionSupervisor
from appliance.realtime.trace import TraceWriter

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_NOPERM, EXIT_CONFIG = 0, 1, 77, 78
CHUNK_MS = 100
MIN_QUESTION_MS = 100  # the API rejects commits under 100 ms


def _bytes_of_ms(ms: int, rate: int) -> int:
    return rate * ms // 1000 * 2


class AskFailed(Exception):
    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class _Printer:
    """Prints ``user: ...`` and a streamed ``assistant: ...`` line, whichever arrives first."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.open_line = False

    def user(self, text: str) -> None:
        self.end()
        print(f"user: {text}", file=self.out, flush=True)

    def assistant(self, delta: str) -> None:
        if not self.open_line:
            print("assistant: ", end="", file=self.out)
            self.open_line = True
        print(delta, end="", file=self.out, flush=True)

    def end(self) -> None:
        if self.open_line:
            print(file=self.out, flush=True)
            self.open_line = False


async def _next(link: SessionSupervisor, wait_s: float) -> object:
    try:
        return await asyncio.wait_for(link.next_event(), wait_s)
    except TimeoutError:
        raise AskFailed(f"no answer within {wait_s:g} s") from None


async def ask(
    config: Config,
    api_key: ApiKey,
    question: bytes | QuestionSource,
    answer_path: Path | None,
    *,
    retries: int = 2,
    out: TextIO = sys.stdout,
    trace: TraceWriter | None = None,
) -> int:
    """Ask ``question`` (mono PCM16 at ``realtime.input_rate``, or a file read and converted
    while the link connects); returns the exit code. Raises :class:`AskFailed`.

    With a ``trace``, every event of every session it opens is written there (``--trace``).
    """
    rate = config.realtime.input_rate
    if isinstance(question, bytes) and len(question) < _bytes_of_ms(MIN_QUESTION_MS, rate):
        raise AskFailed("the question is shorter than 100 ms of audio", exit_code=2)
    # No history: a retried question must not appear twice in the model's context.
    settings = dataclasses.replace(
        LinkSettings.from_config(config.realtime, api_key, trace), history_max_chars=0
    )
    printer = _Printer(out)
    failures = 0
    answer_timeout = config.realtime.answer_timeout_s

    def failed(reason: str) -> None:
        nonlocal failures
        failures += 1
        printer.end()
        if failures > retries:
            raise AskFailed(f"giving up after {failures} attempts: {reason}")
        log.warning("%s; asking again (%d of %d)", reason, failures, retries)

    # The first attempt's question is read while the link connects.
    reader: BlockPrefetch | None = _read(question, rate)
    async with SessionSupervisor(settings) as link, contextlib.aclosing(reader):
        while True:
            event = await link.next_event()
            match event:
                case AuthRejected(reason=reason):
                    raise AskFailed(reason, exit_code=EXIT_NOPERM)
                case SetupRejected(reason=reason):
                    raise AskFailed(reason, exit_code=EXIT_CONFIG)
                case Disconnected(reason=reason):
                    failed(f"cannot reach the Realtime API: {reason}")
                    continue
                case Connected():
                    pass
                case _:
                    continue
            reader = reader or _read(question, rate)  # a retry reads the file again
            try:
                audio = await _one_turn(link, reader, printer, answer_timeout)
            except NotConnected as exc:
                failed(str(exc))
                continue
            except _TurnLost as exc:
                failed(str(exc))
                continue
            finally:
                reader.close()
                reader = None
            break
    printer.end()
    if audio is None:
        print("(the answer had no audio; nothing written)", file=out)
    elif answer_path is not None:
        write_wav(answer_path, audio, link.output_rate)
        seconds = len(audio) / 2 / link.output_rate
        print(f"wrote {answer_path} ({seconds:.1f} s at {link.output_rate} Hz)", file=out)
    else:
        print("(the answer's audio was not kept: -o ANSWER.wav keeps it)", file=out)
    return EXIT_OK


class _TurnLost(Exception):
    pass


async def _late_transcript(link: SessionSupervisor, printer: _Printer) -> None:
    """Print the question's words if they arrive shortly after the answer (OpenAI transcribes
    asynchronously); never wait longer than the transcript wait."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(link.settings.transcript_wait_ms / 1000):
            while True:
                event = await link.next_event()
                if isinstance(event, ev.InputTranscript):
                    printer.user(event.transcript)
                    return


def _read(question: bytes | QuestionSource, rate: int) -> BlockPrefetch:
    """Start reading (and converting to ``rate``) the question in a thread."""
    if isinstance(question, bytes):
        return BlockPrefetch(lambda: (question,))
    return BlockPrefetch(lambda: question.blocks(rate))


async def _send_question(link: SessionSupervisor, reader: BlockPrefetch, rate: int) -> None:
    """Append the question in 100 ms pieces as it is read; commit only a long enough one."""
    chunk_bytes = _bytes_of_ms(CHUNK_MS, rate)
    pending = b""
    sent = 0
    while True:
        try:
            block = await reader.next_block()
        except AudioFileError as exc:
            raise AskFailed(str(exc), exit_code=2) from None
        if block is None:
            break
        pending += block
        whole = len(pending) - len(pending) % chunk_bytes
        for start in range(0, whole, chunk_bytes):
            await link.append_audio(pending[start : start + chunk_bytes])
        pending = pending[whole:]
        sent += whole
    if pending:
        await link.append_audio(pending)
        sent += len(pending)
    if sent < _bytes_of_ms(MIN_QUESTION_MS, rate):
        raise AskFailed("the question is shorter than 100 ms of audio", exit_code=2)


async def _one_turn(
    link: SessionSupervisor, reader: BlockPrefetch, printer: _Printer, answer_timeout: float
) -> bytes | None:
    """Send the question and collect one whole answer; ``_TurnLost`` if the link died."""
    link.begin_turn()
    words = AnswerWords()
    try:
        await _send_question(link, reader, link.settings.input_rate)
        await link.commit()
        link.ask_when_ready()
        chunks: list[bytes] = []
        response_failures = 0
        heard = False
        while True:
            event = await _next(link, answer_timeout)
            match event:
                case (
                    Disconnected(reason=reason)
                    | AuthRejected(reason=reason)
                    | SetupRejected(reason=reason)
                ):
                    raise _TurnLost(f"the link was lost mid-answer: {reason}")
                case ev.InputTranscript(transcript=text):
                    printer.user(text)
                    heard = True
                case ev.TranscriptDelta(item_id=item, delta=delta, channel=channel):
                    shown = words.delta(item, delta, channel)
                    if shown:
                        printer.assistant(shown)
                case ev.TranscriptDone(item_id=item, text=text, channel=channel):
                    if not words.text(item):  # no deltas came: the words are only here
                        printer.assistant(text)
                    words.done(item, text, channel)
                case ev.AudioDelta(audio=audio):
                    chunks.append(audio)
                case ev.ServerError(is_commit_empty=True):
                    raise AskFailed("the server found no audio in the question")
                case ev.ResponseDone(status="failed" | "cancelled" as status) as done:
                    response_failures += 1
                    if response_failures > 2:
                        raise AskFailed(f"the answer {status}: {done.error_message or ''}")
                    log.warning("the answer %s (%s); asking again", status, done.error_code)
                    chunks.clear()
                    words.clear()
                    printer.end()
                    await link.create_response()
                case ev.ResponseDone(answer_follows=True):
                    pass  # a tool round: the follow-up response is on its way
                case ev.ResponseDone():
                    if not heard:  # the question's transcript may come after the answer
                        await _late_transcript(link, printer)
                    return b"".join(chunks) if chunks else None
    finally:
        link.end_turn()
