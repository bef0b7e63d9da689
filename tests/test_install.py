"""install.sh's system path, run for real into temporary trees with --root.

The application's venv is built once for the module (about 15 s); the other cases run on copies
of that tree (its venv names /opt/appliance, not the tree, so a copy works) and on copies of the
checkout when they change the source. No systemd runs here: the systemctl calls are checked
against a stand-in on PATH. `./install.sh --dev` is not run (CI runs it before the tests).
"""

from __future__ import annotations

import os
import pty
import select
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance import __version__

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-INSTALL-5e1d0c-never-print-me"
COPY_IGNORE = shutil.ignore_patterns(
    ".venv", ".git", "__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache", ".hypothesis",
    "build", "dist",
)  # fmt: skip

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="install.sh's system path runs as root")


def checkout_copy(dest: Path, source: Path = ROOT) -> Path:
    """A copy of the checkout; variants copy the module's copy, as others edit the tree."""
    shutil.copytree(source, dest, ignore=COPY_IGNORE, symlinks=True)
    return dest


def tree_copy(tree: Path, dest: Path) -> Path:
    shutil.copytree(tree, dest, symlinks=True)  # copy2: modes and mtimes kept
    return dest


def install(src: Path, *args, env=None, check=True, **kw) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(src / "install.sh"), *map(str, args)],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
        env=env, **kw,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert KEY not in output, "install.sh printed the API key"
    if check:
        assert result.returncode == 0, output
    return result


def snapshot(tree: Path) -> dict[str, tuple]:
    """Every file, link and directory: type, mode, owner, mtime and content."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in [*dirnames, *filenames]:
            path = Path(dirpath, name)
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                content = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                content = path.read_bytes()
            else:
                content = None
            found[str(path.relative_to(tree))] = (
                st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, content,
            )  # fmt: skip
    return found


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@dataclass
class Installed:
    base: Path
    src: Path  # a copy of the checkout
    key_file: Path
    tree: Path  # installed once into, with --root
    first: subprocess.CompletedProcess


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    base = tmp_path_factory.mktemp("install")
    src = checkout_copy(base / "src")
    key_file = base / "key"
    key_file.write_text(f"  {KEY}  \n")
    key_file.chmod(0o600)
    tree = base / "tree"
    tree.mkdir()
    first = install(src, "--root", tree, "--api-key-file", key_file)
    return Installed(base, src, key_file, tree, first)


def venv_appliance(tree: Path, *args) -> subprocess.CompletedProcess:
    """The installed console script, run by the venv's python (its #! names /opt/appliance)."""
    venv = tree / "opt/appliance/venv"
    return subprocess.run(
        [str(venv / "bin/python"), str(venv / "bin/appliance"), *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_syntax_and_help():
    subprocess.run(["bash", "-n", str(ROOT / "install.sh")], check=True)
    result = subprocess.run(
        [str(ROOT / "install.sh"), "--help"], capture_output=True, text=True, check=True
    )
    for option in ("--dev", "--api-key-file F", "--root DIR", "--wheelhouse DIR", "--uninstall"):
        assert option in result.stdout
    bad = subprocess.run([str(ROOT / "install.sh"), "--frobnicate"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.splitlines() == ["install.sh: unknown option: --frobnicate (see --help)"]
    bad = subprocess.run(
        [str(ROOT / "install.sh"), "--dev", "--root", "/tmp"], capture_output=True, text=True
    )
    assert bad.returncode == 2
    assert bad.stderr.startswith("install.sh: --dev takes no other option")


def test_wheelhouse_installs_without_the_index(installed, tmp_path):
    # --wheelhouse DIR: pip may take packages from DIR only (tests/vm/ installs this way with no
    # network). An empty one cannot satisfy the build backend, so the install stops at pip.
    src = checkout_copy(tmp_path / "src", installed.src)
    (src / "appliance" / "wheelhouse_probe.py").write_text("# makes the app reinstall\n")
    tree = tree_copy(installed.tree, tmp_path / "tree")
    empty = tmp_path / "wheels"
    empty.mkdir()
    result = install(src, "--root", tree, "--wheelhouse", empty, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "No matching distribution found for setuptools" in output, output[-2000:]
    assert "pypi" not in output.lower()
    bad = install(src, "--root", tree, "--wheelhouse", tmp_path / "nowhere", check=False)
    assert bad.returncode == 2 and "--wheelhouse" in bad.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck():
    result = subprocess.run(
        ["shellcheck", str(ROOT / "install.sh")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_first_install(installed):
    tree, src, out = installed.tree, installed.src, installed.first.stdout
    assert all(line.startswith("install.sh: ") for line in out.splitlines()), out
    etc = tree / "etc/appliance"
    assert mode(etc) == 0o750
    assert mode(etc / "config.yaml") == 0o640
    assert (etc / "config.yaml").read_bytes() == (src / "config.yaml").read_bytes()
    assert mode(etc / "api-key") == 0o600
    assert (etc / "api-key").read_text() == KEY + "\n"
    unit = tree / "etc/systemd/system/appliance.service"
    assert unit.read_bytes() == (src / "systemd/appliance.service").read_bytes()
    assert mode(unit) == 0o644
    assert (tree / "opt/appliance/README.md").read_bytes() == (src / "README.md").read_bytes()
    # The venv works, and its scripts name the path it will have on the target.
    script = tree / "opt/appliance/venv/bin/appliance"
    assert script.read_text().splitlines()[0] == "#!/opt/appliance/venv/bin/python"
    version = venv_appliance(tree, "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"appliance {__version__}"
    # `appliance` is on PATH: /usr/local/bin is on every PATH, sudo's secure_path included.
    link = tree / "usr/local/bin/appliance"
    assert os.readlink(link) == "/opt/appliance/venv/bin/appliance"
    assert f"linked {link} to /opt/appliance/venv/bin/appliance" in out
    # No passwd in the tree: no user, and said so; no systemd: how to start it.
    assert "the user appliance is not created" in out
    assert "start it with: systemctl enable --now appliance" in out
    assert "skipped appliance check with --root" in out
    assert "installed into" in out
    # Stock Debian leaves /dev/gpiochip* root:root 0600: a udev rule gives them to gpio.
    rule = tree / "etc/udev/rules.d/60-appliance-gpio.rules"
    assert mode(rule) == 0o644
    rules = [ln for ln in rule.read_text().splitlines() if ln and not ln.startswith("#")]
    assert rules == ['SUBSYSTEM=="gpio", KERNEL=="gpiochip*", GROUP="gpio", MODE="0660"']
    assert f"installed {rule}" in out


def test_no_gpio_rule_where_the_system_has_one(installed, tmp_path):
    # Raspberry Pi OS (raspberrypi-sys-mods) gives the GPIO chips to gpio itself: no rule of
    # ours; one left from before is removed.
    tree = tree_copy(installed.tree, tmp_path / "tree")
    pi_rules = tree / "usr/lib/udev/rules.d"
    pi_rules.mkdir(parents=True)
    (pi_rules / "99-com.rules").write_text(
        'SUBSYSTEM=="input", GROUP="input", MODE="0660"\n'
        'SUBSYSTEM=="gpio", GROUP="gpio", MODE="0660"\n'
    )
    result = install(installed.src, "--root", tree, "--api-key-file", installed.key_file)
    assert not (tree / "etc/udev/rules.d/60-appliance-gpio.rules").exists()
    assert "the system's own rule gives the GPIO chips to gpio" in result.stdout


def test_second_run_changes_nothing(installed):
    before = snapshot(installed.tree)
    result = install(installed.src, "--root", installed.tree, "--api-key-file", installed.key_file)
    assert "nothing to change" in result.stdout
    assert "installing the application" not in result.stdout
    assert snapshot(installed.tree) == before


def test_new_default_config_goes_beside_the_users(installed):
    tree = tree_copy(installed.tree, installed.base / "tree-config")
    user_config = tree / "etc/appliance/config.yaml"
    user_config.write_text(user_config.read_text() + "# the owner's edit\n")
    before = (user_config.read_bytes(), user_config.stat().st_mtime_ns)
    src = checkout_copy(installed.base / "src-config", installed.src)
    (src / "config.yaml").write_text((src / "config.yaml").read_text() + "# a newer default\n")

    result = install(src, "--root", tree)
    assert "kept your" in result.stdout
    assert (user_config.read_bytes(), user_config.stat().st_mtime_ns) == before
    new = tree / "etc/appliance/config.yaml.new"
    assert new.read_bytes() == (src / "config.yaml").read_bytes()
    assert mode(new) == 0o640
    assert "installing the application" not in result.stdout  # config.yaml is not the app
    assert "nothing to change" in install(src, "--root", tree).stdout


def test_changed_source_reinstalls_the_app(installed):
    tree = tree_copy(installed.tree, installed.base / "tree-source")
    src = checkout_copy(installed.base / "src-source", installed.src)
    init = src / "appliance/__init__.py"
    init.write_text(init.read_text() + "INSTALL_TEST_MARKER = 1\n")

    result = install(src, "--root", tree)
    assert "installing the application" in result.stdout
    site = list((tree / "opt/appliance/venv/lib").glob("python3*/site-packages/appliance"))
    assert len(site) == 1
    assert "INSTALL_TEST_MARKER" in (site[0] / "__init__.py").read_text()
    script = tree / "opt/appliance/venv/bin/appliance"
    assert script.read_text().splitlines()[0] == "#!/opt/appliance/venv/bin/python"
    assert venv_appliance(tree, "--version").returncode == 0
    assert "nothing to change" in install(src, "--root", tree).stdout


def test_key_replaced_from_file_and_missing_key(installed):
    tree = tree_copy(installed.tree, installed.base / "tree-key")
    other = installed.base / "other-key"
    other.write_text(KEY + "-rotated\n")
    result = install(installed.src, "--root", tree, "--api-key-file", other)
    assert "replaced the API key" in result.stdout
    assert (tree / "etc/appliance/api-key").read_text() == KEY + "-rotated\n"
    assert mode(tree / "etc/appliance/api-key") == 0o600

    (tree / "etc/appliance/api-key").unlink()
    result = install(installed.src, "--root", tree)  # stdin is not a TTY: not asked
    assert "no API key yet" in result.stdout
    assert not (tree / "etc/appliance/api-key").exists()

    empty = installed.base / "empty-key"
    empty.write_text("\n  \n")
    result = install(installed.src, "--root", tree, "--api-key-file", empty, check=False)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"install.sh: --api-key-file {empty}: the file holds no key"
    ]


@pytest.mark.parametrize("content", [f"{KEY}\nsecond-line\n", f"api-key {KEY}\n"])
def test_key_with_whitespace_inside_is_refused(installed, content):
    tree = tree_copy(installed.tree, installed.base / f"tree-space-{len(content)}")
    before = (tree / "etc/appliance/api-key").read_bytes()
    bad = installed.base / f"spaced-key-{len(content)}"
    bad.write_text(content)
    result = install(installed.src, "--root", tree, "--api-key-file", bad, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"install.sh: --api-key-file {bad}: the key has whitespace inside it (more than one "
        "line?); the file must hold the key alone"
    ]
    assert (tree / "etc/appliance/api-key").read_bytes() == before


def test_a_link_that_is_not_ours_is_left_alone(installed):
    tree = tree_copy(installed.tree, installed.base / "tree-foreign-link")
    link = tree / "usr/local/bin/appliance"
    link.unlink()
    link.write_text("#!/bin/sh\necho someone else's\n")
    result = install(installed.src, "--root", tree)
    assert f"left {link} alone (not ours)" in result.stdout
    assert link.read_text().startswith("#!/bin/sh")
    install(installed.src, "--uninstall", "--root", tree)
    assert link.read_text().startswith("#!/bin/sh")


def test_key_asked_on_a_tty_without_echo(installed):
    tree = tree_copy(installed.tree, installed.base / "tree-tty")
    (tree / "etc/appliance/api-key").unlink()
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [str(installed.src / "install.sh"), "--root", str(tree)],
        stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    os.close(slave)
    try:
        prompt = b""
        while b"(input hidden): " not in prompt:
            ready, _, _ = select.select([proc.stderr], [], [], 30)
            assert ready, f"no prompt: {prompt!r}"
            chunk = os.read(proc.stderr.fileno(), 1000)
            assert chunk, f"no prompt: {prompt!r}"
            prompt += chunk
        os.write(master, f"{KEY}\n".encode())
        out, err = proc.communicate(timeout=60)
        echoed = b""
        while select.select([master], [], [], 0.2)[0]:
            try:
                chunk = os.read(master, 1000)
            except OSError:
                break
            if not chunk:
                break
            echoed += chunk
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out + err
    assert KEY.encode() not in echoed + out + err + prompt
    assert b"stored the API key" in out
    assert (tree / "etc/appliance/api-key").read_text() == KEY + "\n"
    assert mode(tree / "etc/appliance/api-key") == 0o600


def test_uninstall_keeps_config_and_purge_removes_it(installed):
    tree = tree_copy(installed.tree, installed.base / "tree-uninstall")
    wants = tree / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir()
    (wants / "appliance.service").symlink_to("/etc/systemd/system/appliance.service")
    (tree / "var/lib/appliance").mkdir(parents=True)

    result = install(installed.src, "--uninstall", "--root", tree)
    assert not (tree / "usr/local/bin/appliance").is_symlink()
    assert f"removed {tree}/usr/local/bin/appliance" in result.stdout
    assert not (tree / "opt/appliance").exists()
    assert not (tree / "etc/udev/rules.d/60-appliance-gpio.rules").exists()
    assert not (tree / "etc/systemd/system/appliance.service").exists()
    assert not (wants / "appliance.service").is_symlink()
    assert (tree / "etc/appliance/config.yaml").exists()
    assert (tree / "etc/appliance/api-key").read_text() == KEY + "\n"
    assert f"kept {tree}/etc/appliance" in result.stdout
    assert f"kept {tree}/var/lib/appliance" in result.stdout

    assert "nothing to remove" in install(installed.src, "--uninstall", "--root", tree).stdout

    result = install(installed.src, "--purge", "--root", tree)
    assert not (tree / "etc/appliance").exists()
    assert not (tree / "var/lib/appliance").exists()
    assert f"removed {tree}/etc/appliance" in result.stdout


def _passwd_entry(tree: Path, db: str, name: str) -> list[str] | None:
    for line in (tree / "etc" / db).read_text().splitlines():
        if line.split(":")[0] == name:
            return line.split(":")
    return None


def test_user_and_groups_in_a_tree_with_a_user_database(installed):
    tree = tree_copy(installed.tree, installed.base / "tree-users")
    etc = tree / "etc"
    etc.joinpath("passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    )
    etc.joinpath("group").write_text("root:x:0:\naudio:x:29:\nnogroup:x:65534:\n")
    etc.joinpath("shadow").write_text("root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n")
    etc.joinpath("gshadow").write_text("root:*::\naudio:*::\nnogroup:*::\n")
    for name in ("shadow", "gshadow"):
        etc.joinpath(name).chmod(0o640)
    host_had_user = subprocess.run(["getent", "passwd", "appliance"]).returncode == 0

    result = install(installed.src, "--root", tree)
    assert "created the group gpio" in result.stdout
    assert "created the system user appliance" in result.stdout
    user = _passwd_entry(tree, "passwd", "appliance")
    assert user is not None
    assert user[5:] == ["/var/lib/appliance", "/usr/sbin/nologin"]
    assert int(user[2]) < 1000  # a system user
    group = _passwd_entry(tree, "group", "appliance")
    for name in ("audio", "gpio"):
        assert "appliance" in _passwd_entry(tree, "group", name)[3].split(",")
    gid = int(group[2])
    for path, owner in [
        (etc / "appliance", (0, gid)),
        (etc / "appliance/config.yaml", (0, gid)),
        (etc / "appliance/api-key", (0, 0)),
        (etc / "systemd/system/appliance.service", (0, 0)),
    ]:
        assert (path.stat().st_uid, path.stat().st_gid) == owner, path

    before = snapshot(tree)
    assert "nothing to change" in install(installed.src, "--root", tree).stdout
    assert snapshot(tree) == before

    result = install(installed.src, "--uninstall", "--root", tree)
    assert "removed the user appliance" in result.stdout
    assert _passwd_entry(tree, "passwd", "appliance") is None
    assert _passwd_entry(tree, "group", "gpio") is not None  # groups are kept
    # Only the tree was touched.
    assert (subprocess.run(["getent", "passwd", "appliance"]).returncode == 0) == host_had_user


FAKE_SYSTEMCTL = """#!/bin/sh
# Stands in for systemctl: logs each call, keeps "enabled" and "active" as files.
echo "$*" >> "$FAKE_SYSTEMD/calls"
case "$1" in
    is-enabled) test -e "$FAKE_SYSTEMD/enabled" ;;
    is-active) test -e "$FAKE_SYSTEMD/active" ;;
    enable) touch "$FAKE_SYSTEMD/enabled" ;;
    restart) touch "$FAKE_SYSTEMD/active" ;;
    disable) rm -f "$FAKE_SYSTEMD/enabled" "$FAKE_SYSTEMD/active" ;;
esac
"""

FAKE_APPLIANCE = """#!/bin/sh
# Stands in for the installed `appliance`: with `check` (which shows where the key is), or
# without it, as before that command existed.
[ -n "$FAKE_NO_CHECK" ] && exit 2
[ "$2" = --help ] && exit 0
test -s "$CREDENTIALS_DIRECTORY/api-key" && echo "check: key present"
exit "${FAKE_CHECK_EXIT:-0}"
"""


def _edit(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def test_systemctl_and_check_where_systemd_runs(installed, tmp_path):
    """The systemd branch, with --root for safety: systemd_runs and the check forced on."""
    src = checkout_copy(tmp_path / "src", installed.src)
    script = (src / "install.sh").read_text()
    script = _edit(script, "systemd_runs() {", "systemd_runs() { return 0; ")
    script = _edit(
        script, 'if [ "$rooted" = 1 ]; then\n    say "skipped', 'if false; then\n    say "skipped'
    )
    (src / "install.sh").write_text(script)
    fake = tmp_path / "systemd"
    fake.mkdir()
    (fake / "systemctl").write_text(FAKE_SYSTEMCTL)
    (fake / "systemctl").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "FAKE_SYSTEMD": str(fake)}
    calls = fake / "calls"

    def run(*args, **extra):
        calls.unlink(missing_ok=True)
        result = install(src, "--root", tree, *args, env={**env, **extra})
        return result, calls.read_text().splitlines() if calls.exists() else []

    tree = tree_copy(installed.tree, tmp_path / "tree")
    (tree / "etc/systemd/system/appliance.service").unlink()
    (tree / "opt/appliance/venv/bin/appliance").write_text(FAKE_APPLIANCE)
    result, made = run(FAKE_NO_CHECK="1")
    assert made == [
        "daemon-reload",
        "is-enabled --quiet appliance",
        "enable --quiet appliance",
        "restart appliance",
    ]
    assert "restarted appliance" in result.stdout
    assert "appliance check is not available yet" in result.stdout

    result, made = run()
    assert made == ["is-enabled --quiet appliance", "is-active --quiet appliance"]
    assert "nothing to change" in result.stdout
    assert "check: key present" in result.stdout
    assert "appliance check: all passed" in result.stdout

    result, made = run(FAKE_CHECK_EXIT="3")
    assert "appliance check failed (exit 3)" in result.stdout  # reported, the install succeeds

    (fake / "active").unlink()  # stopped by hand, nothing changed: not restarted, said so
    result, made = run()
    assert "restart appliance" not in made
    assert "appliance is not running" in result.stdout

    (tree / "etc/appliance/api-key").unlink()  # no key: enabled, but not started
    result, made = run()
    assert "restart appliance" not in made
    assert "not started without a key" in result.stdout

    result, made = run("--uninstall")
    assert made == [
        "disable --now --quiet appliance",
        "daemon-reload",
        "reset-failed appliance",
    ]
