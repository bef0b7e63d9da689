"""``appliance ask`` with the audio files people have: real libsndfile (soundfile), real ffmpeg.

Unit checks read the files through :mod:`appliance.audio.sources`; the end-to-end checks run the
command in a subprocess against the local test server (helpers from test_ask.py).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import struct
import subprocess
import sys
import threading

import numpy as np
import pytest
import soundfile
from conftest import realtime_config_lines
from realtime_server import AudioAnswer, tone
from test_ask import question_wav, run_ask

from appliance.audio.sources import AudioFileError, QuestionFile, open_question
from appliance.audio.wavfile import write_wav

FREQ = 440.0


def sine(seconds: float, rate: int, channels: int = 1, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = (amplitude * np.sin(2 * np.pi * FREQ * t)).astype(np.float32)
    return np.repeat(mono[:, None], channels, axis=1)


def read_all(question: QuestionFile) -> np.ndarray:
    return np.frombuffer(b"".join(question.blocks()), dtype="<i2").astype(np.float64) / 32768


def peak_hz(x: np.ndarray, rate: int = 24000) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


def rms_db(x: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(x**2)) + 1e-12))


# (name, soundfile format, subtype): each one the old RIFF-only reader refused.
SOUNDFILE_CASES = [
    ("pcm16.wav", "WAV", "PCM_16"),
    ("mulaw.wav", "WAV", "ULAW"),
    ("alaw.wav", "WAV", "ALAW"),
    ("adpcm.wav", "WAV", "IMA_ADPCM"),
    ("extensible24.wav", "WAVEX", "PCM_24"),
    ("float.wav", "WAV", "FLOAT"),
    ("voice.flac", "FLAC", "PCM_16"),
    ("voice.ogg", "OGG", "VORBIS"),
    ("voice.opus", "OGG", "OPUS"),
    ("voice.mp3", "MP3", "MPEG_LAYER_III"),
]


@pytest.mark.parametrize(("name", "fmt", "subtype"), SOUNDFILE_CASES)
def test_reads_every_libsndfile_format(tmp_path, name, fmt, subtype):
    rate = 48000 if subtype == "OPUS" else 44100
    path = tmp_path / name
    soundfile.write(path, sine(1.0, rate, 2), rate, format=fmt, subtype=subtype)
    question = open_question(path)
    assert question.reader == "soundfile"
    x = read_all(question)
    assert len(x) == pytest.approx(24000, abs=1200)  # codecs add a little padding
    assert peak_hz(x) == pytest.approx(FREQ, abs=3)
    assert rms_db(x) == pytest.approx(rms_db(sine(1.0, 24000)), abs=1.0)


@pytest.fixture(scope="module")
def ffmpeg_files(tmp_path_factory):
    """M4A (AAC) and WebM (Opus) as phones and messengers write them, made by real ffmpeg."""
    base = tmp_path_factory.mktemp("ffmpeg")
    wav = base / "src.wav"
    soundfile.write(wav, sine(1.0, 44100, 2), 44100, subtype="PCM_16")
    files = {}
    for name, codec in (("voice.m4a", "aac"), ("voice.webm", "libopus")):
        subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", "-i", wav, "-c:a", codec, base / name],
            check=True,
        )
        files[name] = base / name
    return files


@pytest.mark.parametrize("name", ["voice.m4a", "voice.webm"])
def test_containers_libsndfile_cannot_read_go_through_ffmpeg(ffmpeg_files, name):
    question = open_question(ffmpeg_files[name])
    assert question.reader == "ffmpeg"
    x = read_all(question)
    assert len(x) == pytest.approx(24000, abs=1200)
    assert peak_hz(x) == pytest.approx(FREQ, abs=3)


def test_ffmpeg_failure_is_one_line(tmp_path):
    bad = tmp_path / "broken.m4a"
    bad.write_bytes(b"\x00\x00\x00\x20ftypM4A " + os.urandom(500))
    question = open_question(bad)
    with pytest.raises(AudioFileError) as excinfo:
        read_all(question)
    assert str(excinfo.value).startswith(f"{bad}: ffmpeg cannot read it: ")
    assert "\n" not in str(excinfo.value)


async def test_without_ffmpeg_names_the_file_and_the_command(server, tmp_path, ffmpeg_files):
    m4a = tmp_path / "voice.m4a"
    shutil.copy(ffmpeg_files["voice.m4a"], m4a)
    code, _, err = await run_ask(tmp_path, server, m4a, path_env=str(tmp_path / "nobin"))
    assert code == 2
    assert err.strip().splitlines() == [
        f"appliance ask: {m4a}: an MP4/M4A file (AAC audio), which only ffmpeg reads, and ffmpeg "
        f"is not installed; install it (sudo apt install ffmpeg) or convert the file: "
        f"ffmpeg -i {m4a} voice.wav"
    ]
    assert server.connections == []


async def test_m4a_question_is_asked_end_to_end(server, tmp_path, ffmpeg_files):
    server.answers.append(AudioAnswer("Да.", tone(44100, 0.3)))
    code, _, err = await run_ask(
        tmp_path, server, ffmpeg_files["voice.m4a"], "-o", tmp_path / "a.wav"
    )
    assert code == 0, err
    assert len(server.committed_audio[0]) == pytest.approx(48000, abs=2400)


# --- what the hand-written reader did right, kept ---------------------------------------


def _wav_bytes(data: bytes, declared: int | None = None, data_first: bool = False) -> bytes:
    fmt = b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)
    size = len(data) if declared is None else declared
    chunk = b"data" + struct.pack("<I", size) + data
    body = chunk + fmt if data_first else fmt + chunk
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body


@pytest.mark.parametrize(
    "case", ["truncated", "streamed 0xFFFFFFFF", "streamed 0", "data before fmt"]
)
def test_wav_oddities_send_what_they_hold(tmp_path, case):
    pcm = (sine(0.5, 16000)[:, 0] * 32767).astype("<i2").tobytes()
    content = {
        "truncated": _wav_bytes(pcm + pcm)[: 44 + len(pcm)],
        "streamed 0xFFFFFFFF": _wav_bytes(pcm, declared=0xFFFFFFFF),
        "streamed 0": _wav_bytes(pcm, declared=0),
        "data before fmt": _wav_bytes(pcm, data_first=True),
    }[case]
    path = tmp_path / "q.wav"
    path.write_bytes(content)
    x = read_all(open_question(path))
    assert len(x) == pytest.approx(12000, abs=60)
    assert peak_hz(x) == pytest.approx(FREQ, abs=3)


def test_empty_and_short_files(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioFileError, match=r"empty\.wav: the file is empty$"):
        open_question(empty)
    no_audio = tmp_path / "noaudio.flac"
    soundfile.write(no_audio, np.zeros((0, 1), np.float32), 16000)
    with pytest.raises(AudioFileError, match=r"empty"):
        open_question(no_audio)
    short = tmp_path / "short.ogg"
    soundfile.write(short, sine(0.05, 16000), 16000, format="OGG")
    with pytest.raises(AudioFileError, match=r"shorter than 100 ms of audio \(50 ms\)$"):
        open_question(short)


# --- mixing down -------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "centre"), [("WAV", 2), ("FLAC", 2), ("OGG", 1)])
def test_surround_voice_in_the_centre_keeps_its_level(tmp_path, fmt, centre):
    """A 5.1 voice is in the centre channel: the standard downmix keeps it at -3 dB (the
    old plain average of six channels put it 15.6 dB down)."""
    voice = sine(1.0, 48000)[:, 0]
    six = np.zeros((len(voice), 6), np.float32)
    six[:, centre] = voice
    lfe = 5 if fmt == "OGG" else 3
    six[:, lfe] = 0.5 * np.sin(2 * np.pi * 50 * np.arange(len(voice)) / 48000)  # rumble
    path = tmp_path / f"surround.{fmt.lower()}"
    soundfile.write(path, six, 48000, format=fmt)
    x = read_all(open_question(path))
    assert rms_db(x) - rms_db(voice) == pytest.approx(-3.0, abs=0.5)
    assert peak_hz(x) == pytest.approx(FREQ, abs=3)  # the LFE's 50 Hz is left out


# --- bounded memory ----------------------------------------------------------------------

# VmHWM, the process's own peak: ru_maxrss would carry the RSS of pytest it was forked from.
_PEAK = """
import sys
from appliance.audio.sources import open_question
total = sum(len(b) for b in open_question(sys.argv[1]).blocks())
peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(total, peak.split()[1])
"""


def _peak_kib(path) -> tuple[int, int]:
    out = subprocess.run(
        [sys.executable, "-c", _PEAK, str(path)], capture_output=True, text=True, check=True
    ).stdout.split()
    return int(out[0]), int(out[1])


def _long_wav(path, seconds: float) -> None:
    with soundfile.SoundFile(path, "w", 44100, 2, subtype="PCM_16") as f:
        block = sine(10.0, 44100, 2)
        for _ in range(int(seconds // 10)):
            f.write(block)
        f.write(sine(seconds % 10, 44100, 2))


def test_ten_minutes_cost_no_more_memory_than_three_seconds(tmp_path):
    _long_wav(tmp_path / "short.wav", 3)
    _long_wav(tmp_path / "long.wav", 600)
    _, short_peak = _peak_kib(tmp_path / "short.wav")
    long_bytes, long_peak = _peak_kib(tmp_path / "long.wav")
    assert long_bytes == pytest.approx(600 * 48000, abs=100)
    assert long_peak - short_peak < 10 * 1024, (short_peak, long_peak)


async def test_the_link_connects_while_the_file_is_read(server, tmp_path):
    """The reading is held until the server has seen the connection: asking connects first."""
    from conftest import SECRET

    from appliance.ask import ask
    from appliance.config import ApiKey, load_config

    connected = threading.Event()
    loop = asyncio.get_running_loop()

    class Slow(QuestionFile):
        def blocks(self, rate: int = 24000, block_s: float = 0.5):
            if not connected.wait(10):
                raise AudioFileError("the link did not connect while the file was read")
            yield from super().blocks(rate, block_s)

    async def watch():
        while not server.connections:  # noqa: ASYNC110 - the server has no event for it
            await asyncio.sleep(0.01)
        connected.set()

    path = question_wav(tmp_path / "q.wav", seconds=0.6)
    q = open_question(path)
    slow = Slow(q.path, q.reader, q.kind, q.rate, q.channels, q.frames)
    config_path = tmp_path / "c.yaml"
    config_path.write_text("realtime:\n" + realtime_config_lines(server))
    watcher = loop.create_task(watch())
    server.answers.append(AudioAnswer("Ok.", tone(server.output_rate, 0.2)))
    code = await ask(load_config(config_path, {}), ApiKey(SECRET), slow, tmp_path / "a.wav")
    watcher.cancel()
    assert code == 0
    assert len(server.committed_audio[0]) == pytest.approx(0.6 * 48000, abs=200)


# --- the answer's path, checked before anything is sent ---------------------------------


async def test_output_path_problems_are_usage_errors_before_connecting(server, tmp_path):
    q = question_wav(tmp_path / "q.wav")
    (tmp_path / "adir").mkdir()
    cases = {
        tmp_path / "missing" / "a.wav": "no such directory",
        tmp_path / "adir": "is a directory",
        q: "is the question file",
    }
    for output, reason in cases.items():
        code, _, err = await run_ask(tmp_path, server, q, "-o", output)
        assert code == 2, (output, err)
        assert len(err.strip().splitlines()) == 1 and reason in err, err
    assert server.connections == []
    assert q.read_bytes()[:4] == b"RIFF"


async def test_unwritable_output_is_a_usage_error(server, tmp_path):
    """/sys is read-only even for root (the tests run as root, who may write anywhere else)."""
    q = question_wav(tmp_path / "q.wav")
    output = "/sys/answer.wav"
    code, _, err = await run_ask(tmp_path, server, q, "-o", output)
    assert code == 2, err
    assert err.strip().startswith(f"appliance ask: {output}: cannot create a file in /sys (")
    assert server.connections == []


async def test_without_output_says_the_audio_was_not_kept(server, tmp_path):
    server.answers.append(AudioAnswer("Да.", tone(44100, 0.3)))
    code, out, err = await run_ask(tmp_path, server, question_wav(tmp_path / "q.wav"))
    assert code == 0, err
    assert "(the answer's audio was not kept: -o ANSWER.wav keeps it)" in out.splitlines()


def test_mp3_from_ffmpeg_is_read_by_libsndfile(tmp_path):
    """MP3 as most apps write it (with an ID3 tag) is libsndfile's, not ffmpeg's."""
    wav = tmp_path / "src.wav"
    write_wav(wav, (sine(1.0, 16000)[:, 0] * 32767).astype("<i2").tobytes(), 16000)
    mp3 = tmp_path / "voice.mp3"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", wav, "-c:a", "libmp3lame", mp3], check=True
    )
    question = open_question(mp3)
    assert question.reader == "soundfile"
    assert peak_hz(read_all(question)) == pytest.approx(FREQ, abs=3)


@pytest.mark.parametrize("rate", [16000, 24000, 44100])
def test_the_question_is_converted_to_the_rate_asked_for(tmp_path, ffmpeg_files, rate):
    """realtime.input_rate differs by provider: both readers convert to the rate asked for."""
    wav = tmp_path / "q.wav"
    soundfile.write(wav, sine(1.0, 48000, 2), 48000, subtype="PCM_16")
    for question in (open_question(wav), open_question(ffmpeg_files["voice.m4a"])):
        x = np.frombuffer(b"".join(question.blocks(rate)), "<i2").astype(np.float64) / 32768
        assert len(x) == pytest.approx(rate, abs=rate // 20)
        assert peak_hz(x, rate) == pytest.approx(FREQ, abs=3)
