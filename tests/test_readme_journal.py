"""The journalctl commands of README.md's "Reading the conversation", run against a real journal.

Each command is read out of the markdown (the fenced block after a
``<!-- journal-example: NAME -->`` line), so the README and this test cannot drift. The journal
is written by the appliance's own logging code (``setup_service_logging``, ``TranscriptLog``) to
a real systemd-journald in a private mount namespace (tests/journald_namespace.py): a scripted
session of four turns with a warning, an error with its traceback, a turn said while
transcripts were off, and the daemon's start/reload/stop lines. Each command then runs exactly
as written, with only a leading ``sudo`` dropped and ``--no-pager -D <journal dir>`` added (a
``> FILE`` at the end becomes the subprocess's stdout), and its output must hold exactly the
expected entries, in order.

The follow command keeps its ``-f`` and runs for real: inside the namespace, started once
turn 1 is in the journal. It must first print turn 1 (its tail), then the lines of turns 2-4
as they are written, and is stopped once the last one has arrived (``-f`` never ends by itself).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import textwrap
from pathlib import Path

import pytest
from journald_namespace import run_with_journald, unavailable_reason

from appliance.config.loader import load_config

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def section() -> str:
    """The README's "Reading the conversation" section (up to the next heading)."""
    text = README.read_text()
    start = text.index("## Reading the conversation")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


EXAMPLE = re.compile(r"^<!-- journal-example: ([\w-]+) -->\n```(\w+)\n(.*?)\n```$", re.M | re.S)
NAMESPACE_JOURNAL = "/run/log/journal"  # where journald writes, seen from inside the namespace

# The conversation. Turn 3 is said while transcripts are off: its words must appear nowhere.
Q1 = "Какая сегодня погода?"
A1 = "Сегодня солнечно, +20 °C.\nК вечеру ветер, 100% без осадков."
Q2 = "Set a timer for ten minutes"
Q3, A3 = "private question", "private answer"
Q4, A4 = "Thank you", "You're welcome!"
RUNNING = "the appliance is running (idle, connected)"
RELOADED = "reloaded /etc/appliance/config.yaml"
STOPPING = "stopping"
WARNING = "microphone busy, retrying"
RENEWED = "the Realtime session ended between turns (expired); reopening"
ERROR = "the link died in the middle of the answer"
TURNS = [
    "turn 1: answered in 850 ms (audio in 2100 ms, out 4300 ms, session sess-a)",
    "turn 2: failed (audio in 1800 ms, out 0 ms, session sess-a)",
    "turn 3: timeout (audio in 1200 ms, out 0 ms, session sess-b)",
    "turn 4: answered in 640 ms (audio in 900 ms, out 1500 ms, session sess-b)",
]
CONVERSATION = [f"user: {Q1}", f"assistant: {A1}", f"user: {Q2}", f"user: {Q4}", f"assistant: {A4}"]

WRITER = textwrap.dedent(
    f"""
    import json, logging, os, queue, subprocess, threading, time
    from appliance.service.journal import TranscriptLog, setup_service_logging

    assert setup_service_logging("info") == "journal"
    daemon = logging.getLogger("appliance")  # the daemon's own logger, as in daemon.py
    said = TranscriptLog(True, logging.getLogger("appliance.transcript"))

    daemon.info("the appliance is running (%s)", "idle, connected")
    said.user({Q1!r}, 1, "sess-a")
    said.assistant({A1!r}, 1, "sess-a")
    said.turn(1, 850, 2100, 4300, "answered", session_id="sess-a")

    # The README's follow command, running while the rest is written.
    follow = subprocess.Popen(
        json.loads(os.environ["FOLLOW_ARGV"]),
        stdout=subprocess.PIPE,
        stderr=open(os.environ["FOLLOW_ERR"], "w"),
        text=True,
    )
    lines = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(x) for x in follow.stdout])
    reader.start()
    seen = []

    def wait_for(text, timeout=10.0):
        deadline = time.monotonic() + timeout
        while not any(text in x for x in seen):
            try:
                seen.append(lines.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                return False
        return True

    wait_for({A1.splitlines()[-1]!r})  # the tail (turn 1): journalctl has the journal open
    before = "".join(seen)

    logging.getLogger("appliance.audio.capture").warning({WARNING!r})
    said.user({Q2!r}, 2, "sess-a")
    try:
        raise ConnectionResetError("connection reset by peer")
    except ConnectionResetError:
        logging.getLogger("appliance.realtime").exception({ERROR!r})
    said.turn(2, None, 1800, 0, "failed", session_id="sess-a")
    logging.getLogger("appliance.realtime").info({RENEWED!r})  # a line with "turn" inside

    said.enabled = False  # logging.transcripts: false + reload, as Daemon.reload does it
    daemon.info("reloaded %s", "/etc/appliance/config.yaml")
    said.user({Q3!r}, 3, "sess-b")
    said.assistant({A3!r}, 3, "sess-b")
    said.turn(3, None, 1200, 0, "timeout", session_id="sess-b")

    said.enabled = True
    daemon.info("reloaded %s", "/etc/appliance/config.yaml")
    said.user({Q4!r}, 4, "sess-b")
    said.assistant({A4!r}, 4, "sess-b")
    said.turn(4, 640, 900, 1500, "answered", session_id="sess-b")
    daemon.info("stopping")

    wait_for({A4!r})  # the last line it should print; anything it should not came before
    follow.terminate()
    follow.wait(5)
    reader.join(5)
    while not lines.empty():
        seen.append(lines.get())
    with open(os.environ["FOLLOW_OUT"], "w") as f:
        json.dump({{"before": before, "all": "".join(seen), "rc": follow.returncode}}, f)
    """
)


def examples() -> dict[str, tuple[str, str]]:
    """name -> (language, text) of every marked block of the README section."""
    return {m[1]: (m[2], m[3]) for m in EXAMPLE.finditer(section())}


def command(name: str) -> str:
    lang, text = examples()[name]
    assert lang == "sh"
    assert "\n" not in text, f"{name}: one command per block"
    return text


def runnable(cmd: str, journal_dir: str | Path) -> tuple[list[str], str | None]:
    """The README command as argv against ``journal_dir``, and the file it redirects to."""
    argv = shlex.split(cmd)
    if argv[0] == "sudo":
        argv = argv[1:]
    assert argv[0] == "journalctl", cmd
    assert not {"|", ";", "&&", "||", "<", ">>"} & set(argv), f"plain commands only: {cmd}"
    target = None
    if ">" in argv:
        assert argv.index(">") == len(argv) - 2, cmd
        argv, target = argv[:-2], argv[-1]
    return ["journalctl", "--no-pager", "-D", str(journal_dir), *argv[1:]], target


# "Nov 21 06:37:38 vm appliance[23066]: user: ..."; a multi-line message continues on lines
# indented to the width of that prefix.
SHORT_LINE = re.compile(r"^(\S.*? appliance\[\d+\]: )(.*)$")


def messages(text: str) -> list[str]:
    """The MESSAGE of each entry of journalctl's default (short) output."""
    found: list[str] = []
    width = 0
    for line in text.splitlines():
        m = SHORT_LINE.match(line)
        if m:
            width = len(m[1])
            found.append(m[2])
        elif found and line[:width].isspace():
            found[-1] += "\n" + line[width:]
        elif line != "-- No entries --":
            raise AssertionError(f"not an entry of ours: {line!r}\n{text}")
    return found


@pytest.fixture(scope="module")
def journal(tmp_path_factory):
    """(journal dir, every appliance entry as JSON, the follow command's output)."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"real journald tests: {reason}")
    work = tmp_path_factory.mktemp("readme-journal")
    follow_argv, _ = runnable(command("follow"), NAMESPACE_JOURNAL)
    entries, _ = run_with_journald(
        work,
        WRITER,
        {
            "JOURNAL_STREAM": "8:12345",
            "INVOCATION_ID": "0123456789abcdef0123456789abcdef",
            "FOLLOW_ARGV": json.dumps(follow_argv),
            "FOLLOW_OUT": str(work / "follow.json"),
            "FOLLOW_ERR": str(work / "follow.err"),
        },
        timeout=40,
    )
    ours = [e for e in entries if e.get("SYSLOG_IDENTIFIER") == "appliance"]
    follow = json.loads((work / "follow.json").read_text())
    follow["stderr"] = (work / "follow.err").read_text()
    return work / "log" / "journal", ours, follow


def run(journal, cmd: str, tmp_path: Path) -> str:
    """Run a README command against the test journal; its stdout (or the file it wrote)."""
    journal_dir = journal[0]
    argv, target = runnable(cmd, journal_dir)
    assert "-f" not in argv and "--follow" not in argv
    out = (tmp_path / target).open("w") if target else subprocess.PIPE
    try:
        proc = subprocess.run(
            argv, stdout=out, stderr=subprocess.PIPE, text=True, timeout=20, cwd=tmp_path
        )
    finally:
        if target:
            out.close()
    assert proc.returncode == 0, f"{argv}: exit {proc.returncode}\n{proc.stderr}"
    assert proc.stderr == "", proc.stderr
    text = (tmp_path / target).read_text() if target else proc.stdout  # > FILE: all in it
    assert Q3 not in text and A3 not in text, "said while transcripts were off"
    return text


# ---- the section itself -------------------------------------------------------------------


def test_every_block_is_a_tried_example():
    text = section()
    assert text.startswith("## Reading the conversation\n")
    assert set(examples()) == {
        "follow",
        "today",
        "turns",
        "bad-turns",
        "errors",
        "service",
        "export",
        "export-all",
        "transcripts-off",
    }
    # No command block without a marker (so none goes untried).
    assert text.count("```") == 2 * len(examples())


# ---- each command against the journal -----------------------------------------------------


def test_follow_prints_the_conversation_as_it_happens(journal):
    _, _, follow = journal
    assert "-f" in shlex.split(command("follow"))  # run as is, not with -f taken out
    assert follow["stderr"] == ""
    # Started after turn 1: shows it (the tail), then turns 2-4 as they were written.
    assert messages(follow["before"]) == CONVERSATION[:2]
    assert messages(follow["all"]) == CONVERSATION


def test_todays_transcripts(journal, tmp_path):
    cmd = command("today")
    assert "--since today" in cmd
    assert messages(run(journal, cmd, tmp_path)) == CONVERSATION
    # --since is really applied: nothing is from tomorrow.
    tomorrow = cmd.replace("--since today", "--since tomorrow")
    assert messages(run(journal, tomorrow, tmp_path)) == []


def test_turn_figures(journal, tmp_path):
    # The figures' MESSAGE always starts "turn N: "; the pattern is anchored on exactly that.
    assert messages(run(journal, command("turns"), tmp_path)) == TURNS


def test_bad_turns(journal, tmp_path):
    assert messages(run(journal, command("bad-turns"), tmp_path)) == TURNS[1:3]


def test_errors_only(journal, tmp_path):
    cmd = command("errors")
    (error,) = messages(run(journal, cmd, tmp_path))
    assert error.startswith(ERROR + "\nTraceback (most recent call last):\n")
    assert error.endswith("ConnectionResetError: connection reset by peer")
    # The variant the text offers: warnings too.
    assert "-p warning" in section()
    warning, error = messages(run(journal, cmd.replace("-p err", "-p warning"), tmp_path))
    assert warning == WARNING
    assert error.startswith(ERROR)


def test_the_services_own_lines(journal, tmp_path):
    assert messages(run(journal, command("service"), tmp_path)) == [
        RUNNING,
        RELOADED,
        RELOADED,
        STOPPING,
    ]


def test_export_the_conversation(journal, tmp_path):
    cmd = command("export")
    fields = {"MESSAGE", "APPLIANCE_ROLE", "APPLIANCE_TURN", "APPLIANCE_SESSION"}
    (asked,) = re.findall(r"--output-fields=(\S+)", cmd)
    assert set(asked.split(",")) == fields
    rows = [json.loads(line) for line in run(journal, cmd, tmp_path).splitlines()]
    assert [r["MESSAGE"] for r in rows] == CONVERSATION  # multi-line A1 intact
    assert [(r["APPLIANCE_ROLE"], r["APPLIANCE_TURN"], r["APPLIANCE_SESSION"]) for r in rows] == [
        ("user", "1", "sess-a"),
        ("assistant", "1", "sess-a"),
        ("user", "2", "sess-a"),
        ("user", "4", "sess-b"),
        ("assistant", "4", "sess-b"),
    ]
    # Only the fields asked for, and the four journalctl always adds to JSON.
    always = {"__CURSOR", "__REALTIME_TIMESTAMP", "__MONOTONIC_TIMESTAMP", "_BOOT_ID"}
    for r in rows:
        assert set(r) == fields | always


def test_export_everything_of_today(journal, tmp_path):
    _, ours, _ = journal
    rows = [json.loads(line) for line in run(journal, command("export-all"), tmp_path).splitlines()]
    assert rows == ours  # every entry of the appliance, every field
    assert [r["MESSAGE"].split("\n")[0] for r in rows] == [
        RUNNING,
        f"user: {Q1}",
        f"assistant: {A1}".split("\n")[0],
        TURNS[0],
        WARNING,
        f"user: {Q2}",
        ERROR,
        TURNS[1],
        RENEWED,
        RELOADED,
        TURNS[2],
        RELOADED,
        f"user: {Q4}",
        f"assistant: {A4}",
        TURNS[3],
        STOPPING,
    ]
    assert all({"PRIORITY", "LOGGER", "_PID"} <= set(r) for r in rows)
    # The variant the text offers for reading by eye: the same objects, indented.
    assert "`-o json-pretty`" in section()
    pretty = run(journal, command("export-all").replace("-o json", "-o json-pretty"), tmp_path)
    assert pretty.startswith("{\n\t")
    decoder, at, objects = json.JSONDecoder(), 0, []
    while at < len(pretty):
        obj, at = decoder.raw_decode(pretty, at)
        objects.append(obj)
        at += len(pretty[at:]) - len(pretty[at:].lstrip())
    assert objects == ours


def test_turning_transcripts_off(tmp_path):
    lang, block = examples()["transcripts-off"]
    assert lang == "yaml"
    config = tmp_path / "config.yaml"
    config.write_text("realtime:\n  folder_id: b1gexample\n" + block + "\n")
    assert load_config(config, environ={}).logging.transcripts is False
    # Applied by a reload: the unit sends SIGHUP, and the daemon re-reads the setting.
    assert "`sudo systemctl reload appliance`" in section()
    unit = (ROOT / "systemd" / "appliance.service").read_text()
    assert "\nExecReload=/bin/kill -HUP $MAINPID\n" in unit
    daemon = (ROOT / "appliance" / "daemon.py").read_text()
    assert "self.transcripts.enabled = new.logging.transcripts" in daemon
