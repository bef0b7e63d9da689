#!/bin/bash
# tests/vm/guest.sh: runs INSIDE the VM (systemd as PID 1), started by vmtest.service from the
# 9p share. Writes one "PASS|FAIL|SKIP  name  (detail)" line per check to out/results and its
# trace to out/guest.log. Two boots: phase 1 does everything, then reboots; phase 2 checks that
# the service came back by itself, then uninstalls, and powers off.
#
# Test-only deviations from a Pi (each said where it is done): lgpio is added to the venv by
# hand (the project installs it on Arm only); gpiozero is shown a Pi's /proc/cpuinfo and told
# GPIOZERO_PIN_FACTORY=lgpio by a drop-in, so that it drives the gpio-sim chip.
set -uo pipefail
S=/mnt/share; O=$S/out; RES=$O/results
A=/opt/appliance/venv/bin/appliance
KEY=vm-test-key-0123456789
export PAGER=cat SYSTEMD_PAGER=cat SYSTEMD_COLORS=0 PYTHONDONTWRITEBYTECODE=1
T0=$(date +%s.%N)
el() { awk -v a="$(date +%s.%N)" -v b="${1:-$T0}" 'BEGIN { printf "%.1f", a - b }'; }
step() { echo; echo "=== [$(el) s] $*"; }
result() { printf '%-4s  %s%s\n' "$1" "$2" "${3:+  ($3)}" | tee -a "$RES"; }
pass() { result PASS "$@"; }
fail() { result FAIL "$@"; }
skip() { result SKIP "$@"; }
# soft RC NAME REASON [DETAIL]: a check that runs and is reported but does not gate (a SKIP
# line that says how it went): for what is known to fail now, with the reason.
soft() {
    local how=passed; [ "$1" = 0 ] || how=FAILED
    result SKIP "$2" "not gating: $3; this run: $how${4:+; $4}"
}
ok() { if [ "$1" = 0 ]; then pass "$2" "${3:-}"; else fail "$2" "${3:-}"; fi; }
# check NAME CMD...: PASS when CMD exits 0.
check() { local name=$1; shift; if "$@"; then pass "$name"; else fail "$name"; fi; }
show() { systemctl show appliance -p "$1" --value; }
main_pid() { show MainPID; }
journal_since() { journalctl -u appliance --since "@$1" --no-pager -o cat 2>/dev/null; }
wait_for() {  # wait_for SECONDS CMD...: poll until CMD succeeds
    local until=$(( $(date +%s) + $1 )); shift
    while ! "$@"; do [ "$(date +%s)" -ge "$until" ] && return 1; sleep 0.5; done
}
status_is() { [[ "$(show StatusText)" == $1 ]]; }
app_state() { show StatusText | cut -d, -f1; }   # STATUS= starts with the state
py() { PYTHONPATH=/mnt/wcache/srvlib python3 "$@"; }   # Debian's python3 + numpy (test-only)
state_is() { [ "$(app_state)" = "$1" ]; }
rt() {  # rt GET|POST PATH: the test server's side door
    python3 - "$1" "http://127.0.0.1:$(cat /run/rt.control)$2" <<'EOF'
import sys, urllib.request
req = urllib.request.Request(sys.argv[2], method=sys.argv[1], data=b"" if sys.argv[1] == "POST" else None)
print(urllib.request.urlopen(req, timeout=10).read().decode())
EOF
}
stat_of() { rt GET /stats | python3 -c "import json,sys; s=json.load(sys.stdin); print($1)"; }
# Where the loopback's far ends are: the box uses card Loopback device 0 (the default card);
# what it plays comes out of device 1, and what is played into device 1 is its microphone.
FAR=plughw:CARD=Loopback,DEV=1,SUBDEV=0
RT_PORT=18765   # fixed: after the reboot the box finds the server where it was

setup_devices() {  # the image's vmtest-devices.service made them at boot
    systemctl is-active --quiet vmtest-devices.service || /usr/local/sbin/vmtest-devices || return 1
    local d=/sys/kernel/config/gpio-sim/pi
    CHIP=$(cat $d/bank0/chip_name); SIM=/sys/devices/platform/$(cat $d/dev_name)/$CHIP
    [ -e /dev/snd/controlC0 ] && [ -e /dev/$CHIP ]
}
start_rt_server() {
    rm -f /run/rt.port /run/rt.control
    PYTHONPATH=/mnt/wcache/srvlib:$S/src/tests setsid python3 $S/src/tests/vm/rt_server.py \
        --port $RT_PORT --port-file /run/rt.port --control-port-file /run/rt.control \
        --voices $S/voices > $O/rt_server.log 2>&1 &
    wait_for 90 test -s /run/rt.control
}
led() { cat $SIM/sim_gpio18/value; }
press() { echo pull-down > $SIM/sim_gpio17/pull; }   # the button connects BCM 17 to ground
release() { echo pull-up > $SIM/sim_gpio17/pull; }
# heard FILE FREQ SECONDS: the recording holds a tone of about that pitch and length.
heard() {
    py - "$@" <<'EOF'
import sys
import numpy as np
path, freq, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
rate = 48000  # arecord -r 48000; stopped by SIGINT, it leaves the WAV header's length unset
x = np.fromfile(path, dtype="<i2", offset=44).astype(float)
frame = rate // 50
rms = np.sqrt(np.mean(x[: len(x) // frame * frame].reshape(-1, frame) ** 2, axis=1))
loud = rms > 0.25 * rms.max() if rms.max() > 300 else np.zeros_like(rms, bool)
dur = loud.sum() / 50
idx = np.flatnonzero(loud)
seg = x[idx[0] * frame : (idx[-1] + 1) * frame] if len(idx) else x[:0]
hz = 0.0
if len(seg) > 1024:
    spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
    hz = np.argmax(spec) * rate / len(seg)
good = abs(hz - freq) < 0.02 * freq and abs(dur - seconds) < max(0.3, 0.2 * seconds)
print(f"heard {hz:.0f} Hz for {dur:.2f} s (sent {freq:.0f} Hz for {seconds:.2f} s), peak {x.max() if len(x) else 0:.0f}")
sys.exit(0 if good else 1)
EOF
}

phase=1; [ -e /var/lib/vmtest/phase1 ] && phase=2
echo "######## guest.sh phase $phase, $(date -u +%T)"
mkdir -p /var/lib/vmtest /mnt/wcache
# The wheelhouse and the test server's libraries: a read-only share of the host's cache.
mountpoint -q /mnt/wcache || mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288,ro wcache /mnt/wcache
WHEELS=/mnt/wcache/wheels

if [ $phase = 1 ]; then
: > "$RES"
step "boot"
echo "multi-user.target after $(( $(systemctl show -p ActiveEnterTimestampMonotonic --value multi-user.target) / 1000000 )) s"
systemctl is-system-running; systemctl --failed --no-legend

step "devices: snd-aloop and gpio-sim"
check "kernel sound card (snd-aloop) and GPIO chip (gpio-sim)" setup_devices
aplay -l | grep -i loopback; gpiodetect; ls -l /dev/gpiochip* /dev/snd/
echo "SIM=$SIM"

step "the project's Realtime test server, in the guest (starting while install.sh runs)"
start_rt_server &
RT_STARTER=$!

step "install.sh (the real one: root, systemd running, no network, --wheelhouse)"
ip -br link; ip -br addr | grep -v '^lo' || true
cp -a $S/src /root/appliance; cd /root/appliance || exit 1
echo "$KEY" > /root/api-key; chmod 600 /root/api-key
t=$(date +%s.%N)
./install.sh --wheelhouse $WHEELS --api-key-file /root/api-key > $O/install1.log 2>&1; rc=$?
sed "s/^/    /" $O/install1.log
ok $rc "install.sh installs (no network, from the wheelhouse)" "$(el $t) s"
check "unit enabled and started by install.sh" systemctl is-enabled --quiet appliance
grep -q "installed /etc/udev/rules.d/60-appliance-gpio.rules" $O/install1.log
ok $? "install.sh installs the GPIO udev rule (stock Debian)"
ls -l /dev/gpiochip*
[ "$(stat -c %G:%a /dev/gpiochip0)" = gpio:660 ]; ok $? "/dev/gpiochip0 is root:gpio 0660 without a reboot" "$(stat -c %U:%G:%a /dev/gpiochip0)"
id appliance

step "install.sh again"
t=$(date +%s.%N)
./install.sh --wheelhouse $WHEELS --api-key-file /root/api-key > $O/install2.log 2>&1; rc=$?
sed "s/^/    /" $O/install2.log
[ $rc = 0 ] && grep -q "nothing to change" $O/install2.log; ok $? "second install.sh run: nothing to change" "$(el $t) s"

step "config: the test server; the service restarted"
wait $RT_STARTER; ok $? "the project's Realtime test server runs in the guest"
cat $O/rt_server.log
PORT=$(cat /run/rt.port)
sed -i "s|^  url: .*|  url: \"ws://127.0.0.1:$PORT/v1/realtime\"|; s|^  folder_id: \"\"|  folder_id: \"b1gvmtest0000\"|" /etc/appliance/config.yaml
# The card itself by name ("Loopback: PCM (hw:N,0)", whatever its index after a re-plug), not
# ALSA's `default` (plug over dmix/dsnoop): through that, alsa-lib 1.2.8 aborted the daemon
# (pcm_plugin.c:572: snd_pcm_plugin_status assertion) on the loopback card, 3 times in 2 runs.
sed -i 's|^  input_device: default|  input_device: Loopback|; s|^  output_device: default|  output_device: Loopback|' /etc/appliance/config.yaml
grep -n '^  url:\|^  folder_id:\|^  input_device:\|^  output_device:' /etc/appliance/config.yaml
s0=$(date +%s); systemctl restart appliance; echo "restart rc=$?"
# No lgpio on x86 (the project installs it on Arm only); on arm64 lgpio is there but gpiozero
# finds no Raspberry Pi revision on qemu's virt board: either way gpiozero has no factory, and
# the box has a GPIO chip. That is a broken box, not "no GPIO here".
wait_for 30 status_is "error, *GPIO*"
ok $? "GPIO chip present but unusable: error state with the reason" "$(show StatusText)"
journal_since $s0 | grep -i gpio

step "the Pi's pin factory: lgpio (test-only: by hand on x86, and a Pi's /proc/cpuinfo)"
if [ "$(uname -m)" = aarch64 ]; then   # the Pi's architecture: install.sh installed it
    /opt/appliance/venv/bin/python -c 'import lgpio'
    ok $? "aarch64: install.sh installed lgpio by itself (no test-only install)"
else
    /opt/appliance/venv/bin/pip install -q --no-index --find-links $WHEELS 'lgpio>=0.2'; echo "pip rc=$?"
fi
{ cat /proc/cpuinfo; printf 'Revision\t: c03114\nModel\t: Raspberry Pi 4 Model B Rev 1.4\n'; } > /etc/appliance/fake-cpuinfo
mkdir -p /etc/systemd/system/appliance.service.d
printf '[Service]\nEnvironment=GPIOZERO_PIN_FACTORY=lgpio\nBindReadOnlyPaths=/etc/appliance/fake-cpuinfo:/proc/cpuinfo\n' \
    > /etc/systemd/system/appliance.service.d/vmtest.conf
systemctl daemon-reload
s0=$(date +%s); t=$(date +%s.%N)
systemctl restart appliance; rc=$?
ok $rc "Type=notify: systemctl restart returns after READY=1" "$(el $t) s"
wait_for 30 status_is "idle, connected"; ok $? "READY=1 and STATUS idle, connected" "$(show StatusText)"
journal_since $s0 > $O/journal-start.txt; cat $O/journal-start.txt
grep -q "button on BCM 17, LED on BCM 18 (GPIO)" $O/journal-start.txt
ok $? "GPIO button and LED opened through lgpio under the unit (LG_WD)"
grep -i -E 'jack|cannot connect to server' $O/journal-start.txt
[ $? != 0 ]; ok $? "no JACK noise in the journal at start"
grep -v -E '^(the appliance is running|button on BCM|config: |using |microphone|speaker|session|echo cancellation|connected|opened|audio)' \
    $O/journal-start.txt > /dev/null || true

step "systemd-analyze security (the running unit, real PID 1)"
systemd-analyze security appliance --no-pager > $O/security.txt 2>&1; tail -3 $O/security.txt
exposure=$(sed -n 's/.*Overall exposure level for appliance.service: \([0-9.]*\).*/\1/p' $O/security.txt)
awk -v e="$exposure" 'BEGIN { exit !(e != "" && e <= 1.5) }'; ok $? "systemd-analyze security exposure <= 1.5" "exposure $exposure"

step "the service's own view"
PID=$(main_pid); echo "MainPID $PID"
grep -E '^(Uid|Gid|Groups|CapEff|NoNewPrivs|Seccomp):' /proc/$PID/status
echo "uid_map: $(tr -s ' ' < /proc/$PID/uid_map)"; echo "gid_map: $(tr -s ' ' < /proc/$PID/gid_map)"
groups=$(awk '/^Groups:/ { $1 = ""; print }' /proc/$PID/status)
want=""; for g in audio gpio; do want="$want $(getent group $g | cut -d: -f3)"; done
ok_groups=0; for gid in $want; do [[ " $groups " == *" $gid "* ]] || ok_groups=1; done
[ "$(awk '{print $1}' /proc/$PID/uid_map | tr '\n' ' ')" != "0 " ]   # not the initial namespace
[ $? = 0 ] && [ $ok_groups = 0 ] && [ "$(wc -l < /proc/$PID/uid_map)" -le 2 ]
ok $? "PrivateUsers: own user namespace, groups audio and gpio" "groups$groups; uid_map $(tr -s ' ' < /proc/$PID/uid_map | tr '\n' ';')"
nsenter -t $PID -m ls -l /run/credentials/appliance.service/ 2>&1
cred=$(nsenter -t $PID -m cat /run/credentials/appliance.service/api-key 2>/dev/null)
[ "$cred" = "$KEY" ] && ! tr '\0' '\n' < /proc/$PID/environ | grep -q "$KEY"
ok $? "the API key is a credential (LoadCredential), not in the environment"
ls -l /proc/$PID/fd 2>/dev/null | grep -oE '/dev/(snd|gpiochip)[^ ]*' | sort | uniq -c
# The device policy, from inside the service's cgroup: a probe process joins it and opens
# devices (the cgroup's device filter applies to every process in it, root too).
CG=/sys/fs/cgroup/system.slice/appliance.service
devices=$(python3 - "$CG" <<'EOF'
import os, sys
with open(os.path.join(sys.argv[1], "cgroup.procs"), "w") as f:
    f.write(str(os.getpid()))
out = []
for path in ("/dev/snd/controlC0", "/dev/gpiochip0", "/dev/null", "/dev/vda", "/dev/ttyS0", "/dev/kmsg", "/dev/mem"):
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
        out.append(f"{path}:open")
    except OSError as e:
        out.append(f"{path}:{e.strerror}")
print(" ".join(out))
EOF
)
echo "$devices"
[[ "$devices" == *"/dev/snd/controlC0:open"* && "$devices" == *"/dev/gpiochip0:open"* && "$devices" == *"/dev/null:open"* \
   && "$devices" != *"/dev/vda:open"* && "$devices" != *"/dev/ttyS0:open"* && "$devices" != *"/dev/kmsg:open"* && "$devices" != *"/dev/mem:open"* ]]
ok $? "devices: only the sound card and the GPIO chip (and /dev/null...)" "$devices"

# The turns are driven by the box's own state (its STATUS=), not by fixed delays: under TCG on
# a busy machine a step may take several times as long as on the Pi.
rec_start() { arecord -q -D $FAR -f S16_LE -r 48000 -c 1 "$1" & REC=$!; }
rec_stop() { sleep 0.5; kill -INT $REC; wait $REC 2>/dev/null; }
ask() { aplay -q -D $FAR /root/q500.wav; }   # the question, into the box's microphone
led_duty() {  # led_duty TENTHS: "ON N": samples of the LED line (gpio-sim) that read 1, of N
    local end=$(( ${EPOCHREALTIME/./} + $1 * 100000 )) on=0 n=0 v
    while [ "${EPOCHREALTIME/./}" -lt $end ]; do
        read -r v < $SIM/sim_gpio18/value; n=$((n + 1)); [ "$v" = 1 ] && on=$((on + 1))
    done
    echo "$on $n"
}
answered_since() { journal_since "$1" | grep -c '^turn [0-9]*: answered'; }
sox -n -r 48000 -c 1 -b 16 /root/q500.wav synth 2 sine 500 vol 0.5

step "a turn through the control socket: the question into the loopback, the answer recorded"
rt POST '/answer?freq=660&seconds=1.5' > /dev/null
s0=$(date +%s); t=$(date +%s.%N); rec_start $O/heard1.wav
$A press > /dev/null; wait_for 30 state_is listening; echo "listening after $(el $t) s"
ask; $A release > /dev/null
wait_for 60 state_is speaking; wait_for 60 state_is idle; rec_stop
journal_since $s0 | grep -E '^(user|assistant|turn) '
[ "$(answered_since $s0)" -ge 1 ]; ok $? "a turn through the control socket (press, release) answered" "$(el $t) s"
c=$(stat_of 's["commits"][-1]' 2>/dev/null); echo "server's last commit: $c"
python3 -c "import sys; c=$c; sys.exit(0 if abs(c['hz'] - 500) < 10 and c['seconds'] > 1 else 1)" 2>/dev/null
ok $? "the question reached the server through the kernel card" "$c"
h=$(heard $O/heard1.wav 660 1.5); ok $? "the answer played on the kernel card as sent" "$h"

step "a turn from a gpio-sim button press; the LED line follows the states"
rt POST '/answer?freq=880&seconds=2' > /dev/null
n0=$(stat_of 'len(s["commits"])'); s0=$(date +%s); t=$(date +%s.%N); rec_start $O/heard2.wav
idle=$(led_duty 10)
press; wait_for 30 state_is listening; echo "listening after $(el $t) s"
ask & ASK=$!; listening=$(led_duty 10); wait $ASK
release
wait_for 60 state_is speaking; speaking=$(led_duty 8)
wait_for 60 state_is idle; rec_stop
n1=$(stat_of 'len(s["commits"])')
[ "$n1" -gt "$n0" ] && [ "$(answered_since $s0)" -ge 1 ]
ok $? "a gpio-sim button press makes a turn (lgpio, real edge interrupts)" "commits $n0 -> $n1, $(el $t) s"
h=$(heard $O/heard2.wav 880 2); ok $? "the answer to the press played as sent" "$h"
# config.yaml gpio.led: idle steady at 10 % (PWM), listening steady at 100 %, speaking pulses.
duty="idle $idle, listening $listening, speaking $speaking (on/samples)"; echo "$duty"
awk -v i="$idle" -v l="$listening" -v s="$speaking" 'BEGIN {
    split(i, I, " "); split(l, L, " "); split(s, S, " ")
    exit !(I[2] >= 20 && L[2] >= 20 && S[2] >= 20 && I[1] / I[2] <= 0.4 && L[1] / L[2] >= 0.95 && S[1] / S[2] < 0.95) }'
ok $? "the LED line follows the states (dim idle, full while listening, pulsing while speaking)" "$duty"

step "barge-in: a second press while the answer plays"
rt POST '/answer?freq=550&seconds=8' > /dev/null
tr0=$(stat_of 'len(s["truncations"]) + s["types"].get("response.cancel", 0)')
rec_start $O/heard3.wav
press; wait_for 30 state_is listening; ask; release
wait_for 60 state_is speaking; echo "speaking: rc=$?"; sleep 1.5
t=$(date +%s.%N); press; wait_for 10 state_is listening; rc=$?; echo "state after the 2nd press: $(app_state) ($(el $t) s)"
rt POST '/answer?freq=770&seconds=1' > /dev/null   # the next answer: told apart by its pitch
ask; release
wait_for 60 state_is speaking; wait_for 60 state_is idle; rec_stop
tr1=$(stat_of 'len(s["truncations"]) + s["types"].get("response.cancel", 0)')
[ $rc = 0 ] && [ "$tr1" -gt "$tr0" ]; ok $? "barge-in by a second press: the answer is cut, the box listens" "truncate/cancel $tr0 -> $tr1"
b=$(py - $O/heard3.wav <<'EOF'
import sys
import numpy as np
rate = 48000
x = np.fromfile(sys.argv[1], dtype="<i2", offset=44).astype(float)
block = rate // 10
seconds = {550: 0.0, 770: 0.0}
for i in range(0, len(x) - block, block):
    seg = x[i : i + block]
    if np.abs(seg).max() < 2000:
        continue
    hz = np.argmax(np.abs(np.fft.rfft(seg * np.hanning(block)))) * rate / block
    for f in seconds:
        if abs(hz - f) < 25:
            seconds[f] += 0.1
print(f"550 Hz (the cut answer) heard {seconds[550]:.1f} s of 8 s; 770 Hz (the next) {seconds[770]:.1f} s")
sys.exit(0 if 0.5 < seconds[550] < 6 and seconds[770] > 0.5 else 1)
EOF
)
ok $? "barge-in: the rest of the 8 s answer is not played, the next answer is" "$b"

step "journald fields of the turns"
journalctl -t appliance -b -o json --no-pager > $O/journal.json
python3 - $O/journal.json <<'EOF' > $O/journal-fields.txt
import json, sys
entries = [json.loads(l) for l in open(sys.argv[1])]
entries = [e for e in entries if e.get("APPLIANCE_TURN")]
said = {(e.get("APPLIANCE_ROLE"), e["MESSAGE"]) for e in entries if e.get("APPLIANCE_ROLE")}
turns = [e for e in entries if e.get("APPLIANCE_RESULT")]
keys = sorted({k for e in entries for k in e if k.startswith("APPLIANCE_")})
print(f"{len(entries)} entries, {len(turns)} turns:", sorted(e["APPLIANCE_RESULT"] for e in turns))
print("fields:", keys)
print("said:", sorted(said))
want = {"APPLIANCE_ROLE", "APPLIANCE_TURN", "APPLIANCE_SESSION", "APPLIANCE_RESULT",
        "APPLIANCE_LATENCY_MS", "APPLIANCE_AUDIO_IN_MS", "APPLIANCE_AUDIO_OUT_MS"}
ok = (want <= set(keys) and ("assistant", "assistant: A 660 hertz answer.") in said
      and any(r == "user" for r, _ in said)
      and sum(e["APPLIANCE_RESULT"] == "answered" for e in turns) >= 3
      and any(e["APPLIANCE_RESULT"] != "answered" for e in turns))  # the cut one
sys.exit(0 if ok else 1)
EOF
ok $? "journald: both sides of the turns and their figures, with APPLIANCE_ fields" "$(head -1 $O/journal-fields.txt)"
cat $O/journal-fields.txt

step "echo cancellation on the kernel card: hands-free, the box's answer back into its mic"
# tests/vm/room.py sits on the loopback's far side: what the box plays comes back into its
# microphone 40 ms later (plus the room's own buffering) with a 150 ms decaying tail, mixed
# with a voice (espeak-ng's, made by tests/vm/run) that asks, then talks over the answer. The
# server keeps what the box sent (its echo-cancelled mic) and, once it answers, its VAD hears
# nothing (no barge-in: the answer plays whole).
s0=$(date +%s)
sed -i 's/^  mode: push_to_talk/  mode: hands_free/' /etc/appliance/config.yaml
systemctl restart appliance
wait_for 30 status_is "conversing, connected" || { $A press > /dev/null; $A release > /dev/null; wait_for 30 status_is "conversing, connected"; }
echo "hands-free: $(show StatusText)"
rt POST '/answer?kind=speech&seconds=18' > /dev/null; rt POST '/echo?on=1' > /dev/null
audio_figures() { $A status --json | python3 -c "import json,sys; a=json.load(sys.stdin)['audio']; print({k: {x: a[k].get(x) for x in ('overruns', 'underruns', 'device_underruns', 'dropped_frames', 'callbacks')} for k in ('capture', 'playback')}, 'echo:', a.get('echo'))" 2>&1; }
echo "before: $(audio_figures)"
# ms of microphone samples PortAudio lost (input overflows) that silence stood in for
mic_filled_ms() { $A status --json | python3 -c "import json,sys; c=json.load(sys.stdin)['audio']['capture']; print(round((c.get('dropped_frames') or 0) * 1000 / (c.get('device_rate') or 24000)))" 2>/dev/null || echo 0; }
filled0=$(mic_filled_ms)
cpu0=$(awk '{print $14 + $15}' /proc/$(main_pid)/stat)
t=$(date +%s.%N)
PYTHONPATH=/mnt/wcache/srvlib timeout 90 python3 $S/src/tests/vm/room.py run --out $O/room.npz --voices $S/voices --delay-ms 40 --tail-ms 150 \
    > $O/room.log 2>&1; rc=$?
cat $O/room.log; echo "room rc=$rc after $(el $t) s; $(show StatusText)"
echo "after: $(audio_figures)"
filled="the box's mic lost $(( $(mic_filled_ms) - filled0 )) ms (input overflows; silence stood in)"
cpu=$(awk -v c="$(( $(awk '{print $14 + $15}' /proc/$(main_pid)/stat) - cpu0 ))" -v hz="$(getconf CLK_TCK)" -v s="$(el $t)" 'BEGIN { printf "%.0f", 100 * c / hz / s }')
echo "the box's CPU meanwhile: $cpu % of a core"
journal_since $s0 | grep -v -E "^(Expression|ALSA lib)" | tail -15
python3 -c "import sys, urllib.request; sys.stdout.buffer.write(urllib.request.urlopen('http://127.0.0.1:$(cat /run/rt.control)/mic', timeout=30).read())" > $O/sent.pcm
echo "the box sent $(( $(stat -c %s $O/sent.pcm) / 48000 )) s of audio"
delay=$(journal_since $s0 | grep -o 'echo cancellation: the echo comes.*' | tail -2 | tr '\n' ' ')
echo "journal: $delay"
m=$(py $S/src/tests/vm/room.py measure $O/room.npz $O/sent.pcm --json $O/echo.json); mrc=$?
cat $O/echo.json; echo
name="echo cancellation on the kernel card: ERLE >= 20 dB, near-end correlation >= 0.9"
# Gating under TCG too: the guest's box uses 55-65 % of a core in hands-free and its capture
# thread is held up now and then, but its capture buffer holds 250 ms (mic_stream.py) and the
# reference is placed by the buffers' ADC/DAC times (echo_reference.py), so nothing is lost and
# the echo stays where the canceller learnt it. (exit 3 from measure: the box lost samples.)
[ $rc = 0 ] && [ $mrc = 0 ]; ok $? "$name" "$m; $filled; ${delay:-no delay measured}"
rt POST '/echo?on=0' > /dev/null; rt POST '/answer?freq=660&seconds=1.5' > /dev/null
sed -i 's/^  mode: hands_free/  mode: push_to_talk/' /etc/appliance/config.yaml
systemctl restart appliance; wait_for 30 status_is "idle, connected"; echo "back to push-to-talk: $(show StatusText)"

step "device loss: the sound card goes away while idle, then comes back"
# `modprobe -r snd-aloop` is refused while the box holds the card open (the module is in use).
# Unbinding the driver disconnects the card under the open handles, as a USB unplug does; but
# aloop's remove then waits until every handle on the card is closed (USB's does not), so the
# write is made in the background and the box is stopped if it keeps the dead card open.
s0=$(date +%s); PID=$(main_pid)
echo snd_aloop.0 > /sys/bus/platform/drivers/snd_aloop/unbind & UNBIND=$!
wait_for 30 status_is "error, audio*"
ok $? "the card gone while idle: error state, STATUS says why" "$(show StatusText)"
released=0; wait_for 20 bash -c "! kill -0 $UNBIND 2>/dev/null" && released=1
[ $released = 1 ]; ok $? "the box let go of the removed card (aloop's unbind returned)"
if [ $released = 0 ]; then
    systemctl stop appliance; wait $UNBIND
    echo snd_aloop.0 > /sys/bus/platform/drivers/snd_aloop/bind
    fail "the card back: idle again without a restart" "the box kept the removed card open; stopped and started again to go on"
    systemctl start appliance
else
    wait $UNBIND
    echo snd_aloop.0 > /sys/bus/platform/drivers/snd_aloop/bind
    wait_for 60 status_is "idle, connected"; rc=$?
    [ $rc = 0 ] && [ "$(main_pid)" = "$PID" ]
    ok $? "the card back: idle again without a restart" "$(show StatusText); pid $PID -> $(main_pid)"
fi
wait_for 60 status_is "idle, connected"
journal_since $s0 | grep -v -E "^(Expression|ALSA lib)" | tail -8
noise=$(journal_since $s0 | grep -c -E "^(Expression|ALSA lib)")
[ "$noise" -le 20 ]; ok $? "no flood in the journal while the card was away" "$noise lines of PortAudio/ALSA errors"

step "SIGHUP reloads"
s0=$(date +%s); PID=$(main_pid)
sed -i 's/^  volume: .*/  volume: 0.8/' /etc/appliance/config.yaml
systemctl reload appliance; rc=$?
wait_for 15 bash -c "journalctl -u appliance --since @$s0 -o cat | grep -q '^reloaded '"
[ $rc = 0 ] && [ $? = 0 ] && [ "$(main_pid)" = "$PID" ]; ok $? "systemctl reload (SIGHUP) re-reads the config, same process"

step "watchdog: SIGSTOP, systemd kills and restarts it"
PID=$(main_pid); n0=$(show NRestarts); t=$(date +%s.%N); kill -STOP $PID
wait_for 60 bash -c "p=\$(systemctl show -p MainPID --value appliance); [ \"\$p\" != $PID ] && [ \"\$p\" != 0 ]"
echo "after $(el $t) s: MainPID $PID -> $(main_pid), NRestarts $n0 -> $(show NRestarts)"
journalctl -u appliance -b --no-pager | grep -i watchdog | tail -2
journalctl -u appliance -b --no-pager | grep -qi 'watchdog timeout'; ok $? "watchdog: a stopped daemon is killed and restarted" "$(el $t) s"
wait_for 60 status_is "idle, connected"

step "SIGTERM: stops within 3 s with STOPPING=1"
t=$(date +%s.%N); s0=$(date +%s); systemctl stop appliance; d=$(el $t)
journal_since $s0 | tail -12
r=$(show Result)
awk -v d=$d 'BEGIN { exit !(d < 3.0) }' && [ "$r" = success ] && journal_since $s0 | grep -q '^stopping'
ok $? "systemctl stop: clean exit within 3 s" "$d s, Result=$r"

step "appliance check on the real card and chip (the service is stopped: it holds them)"
sox -n -r 48000 -c 1 -b 16 /root/noise.wav synth 20 pinknoise vol 0.3
aplay -q -D $FAR /root/noise.wav & NOISE=$!
unshare -m bash -c "mount --bind /etc/appliance/fake-cpuinfo /proc/cpuinfo && \
    GPIOZERO_PIN_FACTORY=lgpio CREDENTIALS_DIRECTORY=/etc/appliance timeout 120 $A check" > $O/check.txt 2>&1; rc=$?
kill $NOISE 2>/dev/null; wait $NOISE 2>/dev/null
sed "s/^/    /" $O/check.txt
missing=""; for c in microphone speaker button led realtime; do grep -qE "^ok +$c" $O/check.txt || missing="$missing $c"; done
[ $rc = 0 ] && [ -z "$missing" ]; ok $? "appliance check: microphone, speaker, button, LED, cloud pass" "rc $rc${missing:+; not ok:$missing}"

step "reboot"
echo snd-aloop > /etc/modules-load.d/vmtest.conf   # the box's sound card is there at boot
touch /var/lib/vmtest/phase1
journalctl -b --no-pager > $O/journal-boot1.txt 2>&1
sync
echo "######## phase 1 done at $(el) s"
systemctl reboot
exit 0
fi

# ---- phase 2: after the reboot ---------------------------------------------------------------
step "after the reboot"
setup_devices
# Enabled, it was started at boot (stopped before the reboot). Type=notify: "active" means
# READY=1 was sent. (The test server is not started again: the box retries the session.)
t=$(date +%s.%N)
wait_for 120 bash -c '[ "$(systemctl is-active appliance)" = active ]'
ok $? "after a reboot the service came back by itself (READY=1)" "$(systemctl is-active appliance); $(show StatusText); $(el $t) s after the test began"
journalctl -u appliance -b --no-pager -o cat | head -12

step "uninstall, then purge: nothing left behind"
cd /root/appliance
rm -rf /etc/systemd/system/appliance.service.d   # the test's own drop-in
./install.sh --uninstall > $O/uninstall.log 2>&1; rc=$?; cat $O/uninstall.log
left=""
for p in /opt/appliance /etc/systemd/system/appliance.service /etc/systemd/system/multi-user.target.wants/appliance.service \
         /etc/udev/rules.d/60-appliance-gpio.rules /run/appliance; do [ -e $p ] && left="$left $p"; done
getent passwd appliance >/dev/null && left="$left user:appliance"
systemctl is-active --quiet appliance && left="$left running"
[ -e /etc/appliance/config.yaml ] || left="$left (config gone)"
[ $rc = 0 ] && [ -z "$left" ]; ok $? "install.sh --uninstall: service, app, user, udev rule gone; config kept" "${left:-clean}"
./install.sh --purge > $O/purge.log 2>&1; rc=$?; cat $O/purge.log
left=""; for p in /etc/appliance /var/lib/appliance; do [ -e $p ] && left="$left $p"; done
ls /etc/systemd/system | grep -i appliance && left="$left unit-files"
[ "$(systemctl show -p LoadState --value appliance)" = not-found ] || left="$left unit-loaded"
[ $rc = 0 ] && [ -z "$left" ]; ok $? "install.sh --purge: nothing left behind" "${left:-clean}"
journalctl -b --no-pager > $O/journal-boot2.txt 2>&1
echo "######## phase 2 done at $(el) s"
echo done > $O/done
systemctl poweroff
