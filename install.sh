#!/usr/bin/env bash
# install.sh: set up the appliance.
#
#   sudo ./install.sh          install the appliance: the apt packages, the system user appliance
#                              (groups audio and gpio), the app in /opt/appliance (own venv;
#                              the command linked as /usr/local/bin/appliance),
#                              /etc/appliance/config.yaml (never overwritten), the API key, the
#                              systemd unit (enabled and started where systemd runs), then runs
#                              `appliance check`. A second run changes nothing and says so.
#   ./install.sh --dev         make .venv in this checkout with the package (editable),
#                              the hardware libraries and the test tools
#   --api-key-file F           take the API key from F instead of asking (replaces a different one)
#   --wheelhouse DIR           install the Python packages from the wheels in DIR only, without
#                              the network (pip --no-index --find-links DIR; also with --dev).
#                              DIR needs pip, setuptools, wheel and the app's dependencies: e.g.
#                              pip wheel -w DIR pip setuptools wheel '.[hardware]'
#   --root DIR                 install into the directory tree DIR (image builders, tests):
#                              no apt, no systemctl, no `appliance check`; the user is created
#                              in DIR only if DIR/etc/passwd exists
#   --uninstall                stop and remove the service, /opt/appliance, the appliance command
#                              in /usr/local/bin, the user appliance and the GPIO udev rule;
#                              keeps /etc/appliance (config and key) and /var/lib/appliance
#   --purge                    --uninstall, and remove /etc/appliance and /var/lib/appliance too
#   -h, --help                 this help
#
# Native packages come from apt when run as root; otherwise the exact apt command is printed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
APT_PACKAGES=(python3 python3-venv python3-dev gcc pkg-config portaudio19-dev libsystemd-dev libspeexdsp1 libsndfile1)
# Test-only tools: espeak-ng speaks test questions, sox converts and measures audio;
# systemd-analyze and systemd-journald (never started as PID 1) and unshare test the service;
# ffmpeg is what `appliance ask` falls back on for M4A/WebM; tmux runs the terminal panel.
APT_DEV_PACKAGES=(espeak-ng sox systemd util-linux ffmpeg tmux)

mode=install
purge=0
root=""
api_key_file=""
pip_source=()   # where pip takes packages from: the index, or only a wheelhouse
python=${PYTHON:-python3}

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
say() { printf 'install.sh: %s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }
usage_error() { printf 'install.sh: %s (see --help)\n' "$*" >&2; exit 2; }

dev=0
wheelhouse=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dev) dev=1 ;;
        --uninstall) mode=uninstall ;;
        --purge) mode=uninstall; purge=1 ;;
        --root) [ $# -ge 2 ] || usage_error "--root needs a directory"; root=$2; shift ;;
        --root=*) root=${1#*=} ;;
        --api-key-file) [ $# -ge 2 ] || usage_error "--api-key-file needs a file"; api_key_file=$2; shift ;;
        --api-key-file=*) api_key_file=${1#*=} ;;
        --wheelhouse) [ $# -ge 2 ] || usage_error "--wheelhouse needs a directory"; wheelhouse=$2; shift ;;
        --wheelhouse=*) wheelhouse=${1#*=} ;;
        -h|--help) usage; exit 0 ;;
        *) usage_error "unknown option: $1" ;;
    esac
    shift
done
if [ -n "$wheelhouse" ]; then
    [ -d "$wheelhouse" ] || usage_error "--wheelhouse $wheelhouse: no such directory"
    pip_source=(--no-index --find-links "$(cd "$wheelhouse" && pwd -P)")
fi
if [ "$dev" = 1 ]; then
    if [ "$mode" != install ] || [ -n "$root" ] || [ -n "$api_key_file" ]; then
        usage_error "--dev takes no other option but --wheelhouse"
    fi
    mode=dev
fi
[ "$mode" = uninstall ] && [ -n "$api_key_file" ] && usage_error "--api-key-file makes no sense with --uninstall"

missing_apt() {
    local p missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    printf '%s\n' "${missing[@]}"
}

ensure_apt() {
    local missing
    mapfile -t missing < <(missing_apt "$@" | sed '/^$/d')
    [ ${#missing[@]} -eq 0 ] && return 0
    if ! command -v dpkg-query >/dev/null 2>&1; then
        say "not a Debian system: install these yourself: $*"
        return 0
    fi
    if [ "$(id -u)" -ne 0 ]; then
        say "these system packages are missing; install them and run me again:"
        echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}"
        exit 1
    fi
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

make_venv() {  # make_venv DIR PIP-ARGS...
    local venv=$1; shift
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q "${pip_source[@]}" --upgrade pip
    "$venv/bin/python" -m pip install -q "${pip_source[@]}" "$@"
}

if [ "$mode" = dev ]; then
    ensure_apt "${APT_PACKAGES[@]}" "${APT_DEV_PACKAGES[@]}"
    make_venv "$here/.venv" -e "${here}[hardware,dev]"
    say "dev environment ready in $here/.venv; run the tests with: .venv/bin/python -m pytest"
    exit 0
fi

# ---- system install and uninstall -----------------------------------------------------
# Everything below acts on the system (or on the tree given with --root).
set -E
trap 'printf "install.sh: failed (line %s): %s\n" "$LINENO" "$BASH_COMMAND" >&2' ERR
umask 022   # the app and the unit are world-readable whatever root's umask is

rooted=0
if [ -n "$root" ]; then
    [ -d "$root" ] || die "--root $root: no such directory"
    root=$(cd "$root" && pwd -P)
    rooted=1
elif [ "$(id -u)" -ne 0 ]; then
    [ "$mode" = uninstall ] && die "--uninstall needs root: sudo ./install.sh --uninstall"
    die "the system install needs root: sudo ./install.sh (or ./install.sh --dev for a checkout)"
fi
prefix=${root%/}
TARGET_OPT=/opt/appliance            # where the app lives on the running system
opt="$prefix$TARGET_OPT"
etc="$prefix/etc/appliance"
state="$prefix/var/lib/appliance"
unit_dir="$prefix/etc/systemd/system"
unit="$unit_dir/appliance.service"
USER_NAME=appliance
USER_GROUPS=(audio gpio)
# /dev/gpiochip* for the group gpio: Raspberry Pi OS has a rule for it (raspberrypi-sys-mods);
# other Debian systems leave the chips root:root 0600, and this rule of ours fixes that.
udev_rule="$prefix/etc/udev/rules.d/60-appliance-gpio.rules"
UDEV_RULE_TEXT='# Installed by the appliance'"'"'s install.sh: the GPIO chips for the group gpio (as on Raspberry Pi OS).
SUBSYSTEM=="gpio", KERNEL=="gpiochip*", GROUP="gpio", MODE="0660"'

systemd_runs() { [ "$rooted" = 0 ] && [ -d /run/systemd/system ]; }
udev_runs() { [ "$rooted" = 0 ] && [ -S /run/udev/control ] && command -v udevadm >/dev/null 2>&1; }
# Another rule (Raspberry Pi OS's) already gives the GPIO chips to the group gpio.
gpio_rule_elsewhere() {
    local f
    for f in "$prefix"/etc/udev/rules.d/*.rules "$prefix"/lib/udev/rules.d/*.rules \
             "$prefix"/usr/lib/udev/rules.d/*.rules; do
        [ -f "$f" ] && [ "$f" != "$udev_rule" ] || continue
        grep -qE '^[^#]*(gpiochip|SUBSYSTEM=="gpio").*GROUP="gpio"' "$f" && return 0
    done
    return 1
}
# Apply the rules to the chips there are now (the group was made before the rule: no reboot).
udev_apply() {
    udev_runs || return 0
    udevadm control --reload
    udevadm trigger --subsystem-match=gpio --action=change
    udevadm settle --timeout=10 || true
}

# Users and groups: the host's, or DIR's with --root (only when DIR has a user database).
useropt=()
[ "$rooted" = 1 ] && useropt=(--root "$root")
user_db() {  # user_db passwd|group NAME FIELD: one field of an entry, empty when there is none
    if [ "$rooted" = 1 ]; then
        [ -f "$prefix/etc/$1" ] || return 0
        awk -F: -v name="$2" -v field="$3" '$1 == name { print $field; exit }' "$prefix/etc/$1"
    else
        getent "$1" "$2" | cut -d: -f"$3" || true
    fi
}
user_exists() { [ -n "$(user_db passwd "$1" 1)" ]; }
group_exists() { [ -n "$(user_db group "$1" 1)" ]; }
in_group() { user_db group "$2" 4 | awk -F, -v u="$1" '{ for (i = 1; i <= NF; i++) if ($i == u) f = 1 } END { exit !f }'; }
can_manage_users() {
    [ "$(id -u)" -eq 0 ] || return 1
    [ "$rooted" = 0 ] || [ -f "$prefix/etc/passwd" ]
}

# ---- uninstall ------------------------------------------------------------------------
if [ "$mode" = uninstall ]; then
    did=0
    if systemd_runs && [ -e "$unit" ]; then
        systemctl disable --now --quiet appliance 2>/dev/null || true
        say "stopped and disabled appliance"
        did=1
    fi
    while IFS= read -r -d '' link; do
        rm -f "$link"; say "removed $link"; did=1
    done < <(find "$unit_dir" -path '*.wants/appliance.service' -print0 2>/dev/null || true)
    if [ -e "$unit" ]; then
        rm -f "$unit"; say "removed $unit"; did=1
        if systemd_runs; then
            systemctl daemon-reload
            systemctl reset-failed appliance 2>/dev/null || true
        fi
    fi
    bin_link="$prefix/usr/local/bin/appliance"
    if [ "$(readlink "$bin_link" 2>/dev/null)" = "$TARGET_OPT/venv/bin/appliance" ]; then
        rm -f "$bin_link"; say "removed $bin_link"; did=1
    fi
    if [ -e "$opt" ]; then
        rm -rf "$opt"; say "removed $opt"; did=1
    fi
    if [ -e "$udev_rule" ]; then
        rm -f "$udev_rule"; say "removed $udev_rule"; did=1
        udev_apply
    fi
    if can_manage_users && user_exists "$USER_NAME"; then
        userdel "${useropt[@]}" "$USER_NAME"
        say "removed the user $USER_NAME; kept the groups ${USER_GROUPS[*]} (other software uses them)"; did=1
    fi
    if [ "$purge" = 1 ]; then
        for d in "$etc" "$state"; do
            if [ -e "$d" ]; then rm -rf "$d"; say "removed $d"; did=1; fi
        done
    else
        [ -e "$etc" ] && say "kept $etc (config.yaml and the API key): --purge removes it"
        [ -e "$state" ] && say "kept $state: --purge removes it"
    fi
    if [ "$did" = 0 ]; then
        say "nothing to remove: the appliance is not installed${root:+ in $root}"
    else
        say "uninstalled${root:+ from $root}"
    fi
    exit 0
fi

# ---- install --------------------------------------------------------------------------
for f in appliance pyproject.toml README.md config.yaml systemd/appliance.service; do
    [ -e "$here/$f" ] || die "$here/$f is missing: run me from a complete checkout"
done

# The key from a file: the whole file, surrounding whitespace dropped. Never printed.
trim() { local s=$1; s=${s#"${s%%[![:space:]]*}"}; printf '%s' "${s%"${s##*[![:space:]]}"}"; }
read_key() { trim "$(cat "$1")"; }
# Whitespace inside a key (two lines, a pasted "api-key XXX") is refused here, as the daemon
# would refuse it later, when nobody is watching.
has_space() { [[ $1 == *[[:space:]]* ]]; }
new_key=""
if [ -n "$api_key_file" ]; then
    [ -r "$api_key_file" ] || die "--api-key-file $api_key_file: cannot read it"
    new_key=$(read_key "$api_key_file")
    [ -n "$new_key" ] || die "--api-key-file $api_key_file: the file holds no key"
    has_space "$new_key" && die "--api-key-file $api_key_file: the key has whitespace inside it (more than one line?); the file must hold the key alone"
fi

if [ "$rooted" = 1 ]; then
    say "no apt with --root: the target needs python3 (the same version as here), libportaudio2, libsystemd0 and libsndfile1"
else
    ensure_apt "${APT_PACKAGES[@]}"
fi

changed=0   # anything at all was changed
restart=0   # the running service must be restarted to see it

# The system user and its groups.
if can_manage_users; then
    for g in "${USER_GROUPS[@]}"; do
        if ! group_exists "$g"; then
            groupadd "${useropt[@]}" --system "$g"
            say "created the group $g"; changed=1
        fi
    done
    if ! user_exists "$USER_NAME"; then
        useradd "${useropt[@]}" --system --user-group --home-dir /var/lib/appliance --no-create-home \
            --shell /usr/sbin/nologin --groups "$(IFS=,; echo "${USER_GROUPS[*]}")" "$USER_NAME"
        say "created the system user $USER_NAME (groups ${USER_GROUPS[*]})"; changed=1; restart=1
    else
        for g in "${USER_GROUPS[@]}"; do
            if ! in_group "$USER_NAME" "$g"; then
                usermod "${useropt[@]}" -a -G "$g" "$USER_NAME"
                say "added $USER_NAME to the group $g"; changed=1; restart=1
            fi
        done
    fi
elif [ "$rooted" = 1 ] && [ "$(id -u)" -eq 0 ]; then
    say "no $prefix/etc/passwd: the user $USER_NAME is not created; in the target run:" \
        "useradd --system --user-group --home-dir /var/lib/appliance --no-create-home" \
        "--shell /usr/sbin/nologin --groups $(IFS=,; echo "${USER_GROUPS[*]}") $USER_NAME"
else
    say "not root: the user $USER_NAME is not created and no owner is set"
fi

# Ownership: root, with the group appliance where the service must read; skipped when that
# group does not exist (yet) in the target, or when not root.
gid_of() {  # gid_of root|appliance: empty when it cannot be set
    [ "$(id -u)" -eq 0 ] || return 0
    case "$1" in
        root) echo 0 ;;
        *) user_db group "$1" 3 ;;
    esac
}
# fix_perm PATH MODE GROUP [quiet]: set the mode and root:GROUP when they differ.
fix_perm() {
    local path=$1 mode=$2 group=$3 quiet=${4:-} gid fixed=""
    if [ "$(stat -c %a "$path")" != "$mode" ]; then
        chmod "$mode" "$path"; fixed="mode $mode"
    fi
    gid=$(gid_of "$group")
    if [ -n "$gid" ] && [ "$(stat -c %u:%g "$path")" != "0:$gid" ]; then
        chown "0:$gid" "$path"; fixed="${fixed:+$fixed, }owner root:$group"
    fi
    if [ -n "$fixed" ] && [ -z "$quiet" ]; then
        say "set $path to $fixed"; changed=1
    fi
    return 0
}
# put_file SRC DEST MODE GROUP: copy when the content differs; returns 0 when it copied.
put_file() {
    if cmp -s "$1" "$2"; then
        fix_perm "$2" "$3" "$4"
        return 1
    fi
    install -m "$3" "$1" "$2"
    fix_perm "$2" "$3" "$4" quiet
    changed=1
    return 0
}

# The application: a copy of the source and its own venv, rebuilt only when the source (or the
# python3 it runs on) changed.
py_version=$("$python" -c 'import sys; print(sys.version)')
stamp=$( { echo "$py_version"; cd "$here" && find appliance pyproject.toml -type f \
            ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum; } \
        | sha256sum | cut -d' ' -f1)
if [ "$(cat "$opt/.source-stamp" 2>/dev/null)" != "$stamp" ]; then
    say "installing the application into $opt"
    if [ -e "$opt/venv" ] && [ "$("$opt/venv/bin/python" -c 'import sys; print(sys.version)' 2>/dev/null)" != "$py_version" ]; then
        rm -rf "$opt/venv"   # made for another python3: start afresh
    fi
    rm -rf "$opt/src"        # whole: a stale build/ would carry deleted modules into the wheel
    mkdir -p "$opt/src"
    cp -r "$here/appliance" "$here/pyproject.toml" "$here/README.md" "$here/config.yaml" "$opt/src/"
    find "$opt/src" -name __pycache__ -prune -exec rm -rf {} +
    make_venv "$opt/venv" "$opt/src[hardware]"
    if [ -n "$prefix" ]; then
        # Built under DIR, run from /opt/appliance: the scripts' #! lines must name the latter.
        "$python" - "$opt" "$TARGET_OPT" "$opt/venv" <<'EOF'
import pathlib, sys
old, new, venv = (s.encode() for s in sys.argv[1:4])
files = [p for p in pathlib.Path(venv.decode(), "bin").iterdir() if p.is_file() and not p.is_symlink()]
for path in [*files, pathlib.Path(venv.decode(), "pyvenv.cfg")]:
    data = path.read_bytes()
    if old in data:
        path.write_bytes(data.replace(old, new))
EOF
    fi
    echo "$stamp" > "$opt/.source-stamp"
    changed=1; restart=1
fi
# `appliance` on PATH (sudo's secure_path has /usr/local/bin too): a link to the venv's script.
bin_link="$prefix/usr/local/bin/appliance"
if [ "$(readlink "$bin_link" 2>/dev/null)" != "$TARGET_OPT/venv/bin/appliance" ]; then
    if [ -e "$bin_link" ] && [ ! -L "$bin_link" ]; then
        say "left $bin_link alone (not ours): run $TARGET_OPT/venv/bin/appliance"
    else
        mkdir -p "$(dirname "$bin_link")"
        ln -sfn "$TARGET_OPT/venv/bin/appliance" "$bin_link"
        say "linked $bin_link to $TARGET_OPT/venv/bin/appliance"; changed=1
    fi
fi
# The README beside the app: the unit's Documentation= points at it.
if put_file "$here/README.md" "$opt/README.md" 644 root; then say "wrote $opt/README.md"; fi

# The configuration: never overwritten; a newer default goes beside it.
if [ ! -d "$etc" ]; then
    mkdir -p "$etc"
    fix_perm "$etc" 750 appliance quiet
    say "created $etc"; changed=1
fi
fix_perm "$etc" 750 appliance
if [ ! -e "$etc/config.yaml" ]; then
    put_file "$here/config.yaml" "$etc/config.yaml" 640 appliance
    say "wrote $etc/config.yaml: set realtime.folder_id in it"
    restart=1
else
    fix_perm "$etc/config.yaml" 640 appliance
    if ! cmp -s "$here/config.yaml" "$etc/config.yaml"; then
        if put_file "$here/config.yaml" "$etc/config.yaml.new" 640 appliance; then
            say "kept your $etc/config.yaml; the new default is beside it as config.yaml.new"
        fi
    fi
fi

# The key: root's alone (0600); systemd's LoadCredential hands it to the service. Asked once.
write_key() {  # write_key KEY: created 0600 from the start, then moved into place
    (umask 077; printf '%s\n' "$1" > "$etc/api-key.tmp")
    mv -f "$etc/api-key.tmp" "$etc/api-key"
    fix_perm "$etc/api-key" 600 root quiet
    changed=1; restart=1
}
have_key=1
if [ -n "$new_key" ]; then
    if [ ! -s "$etc/api-key" ]; then
        write_key "$new_key"; say "stored the API key in $etc/api-key (mode 0600)"
    elif [ "$(read_key "$etc/api-key")" != "$new_key" ]; then
        write_key "$new_key"; say "replaced the API key in $etc/api-key"
    fi
    new_key=""
elif [ ! -s "$etc/api-key" ]; then
    key=""
    if [ -t 0 ]; then
        read -r -s -p "Yandex AI Studio API key (input hidden): " key || true
        echo >&2
        key=$(trim "$key")
        has_space "$key" && die "the key has whitespace inside it; paste the key alone"
    fi
    if [ -n "$key" ]; then
        write_key "$key"; say "stored the API key in $etc/api-key (mode 0600)"
    else
        say "no API key yet: put it in $etc/api-key (mode 0600) or run me again with --api-key-file F"
        have_key=0
    fi
    key=""
fi
[ -e "$etc/api-key" ] && fix_perm "$etc/api-key" 600 root

# The GPIO chips' group, where the system does not give them to gpio already.
if gpio_rule_elsewhere; then
    if [ -e "$udev_rule" ]; then
        rm -f "$udev_rule"; say "removed $udev_rule: the system's own rule gives the GPIO chips to gpio"
        changed=1
    fi
else
    mkdir -p "$(dirname "$udev_rule")"
    rule_tmp=$(mktemp); printf '%s\n' "$UDEV_RULE_TEXT" > "$rule_tmp"
    if put_file "$rule_tmp" "$udev_rule" 644 root; then
        say "installed $udev_rule (/dev/gpiochip* for the group gpio)"; restart=1
        udev_apply
    fi
    rm -f "$rule_tmp"
fi

# The unit.
mkdir -p "$unit_dir"
unit_changed=0
if put_file "$here/systemd/appliance.service" "$unit" 644 root; then
    say "installed $unit"; unit_changed=1; restart=1
fi

# Enabled and (re)started where systemd runs; elsewhere, say how.
if systemd_runs; then
    [ "$unit_changed" = 1 ] && systemctl daemon-reload
    if ! systemctl is-enabled --quiet appliance 2>/dev/null; then
        systemctl enable --quiet appliance
        say "enabled appliance (it starts at boot)"; changed=1
    fi
    if [ "$have_key" = 0 ]; then
        say "appliance is not started without a key: once it is there, systemctl restart appliance"
    elif [ "$restart" = 1 ] || ! systemctl is-active --quiet appliance; then
        if [ "$restart" = 0 ]; then
            say "appliance is not running: see systemctl status appliance (then systemctl restart appliance)"
        elif systemctl restart appliance; then
            say "restarted appliance"
        else
            say "appliance did not start: see journalctl -u appliance -n 30, then systemctl restart appliance"
        fi
    fi
elif [ "$rooted" = 1 ]; then
    say "on the target system, start it with: systemctl enable --now appliance"
else
    say "systemd is not running here: where it runs, start it with: systemctl enable --now appliance"
fi

if [ "$changed" = 0 ]; then
    say "nothing to change: the appliance is already installed in $opt"
else
    say "installed into $opt"
fi

# Last, the doctor: its result is reported, it does not fail the install.
if [ "$rooted" = 1 ]; then
    say "skipped appliance check with --root"
elif ! "$opt/venv/bin/appliance" check --help >/dev/null 2>&1; then
    say "appliance check is not available yet"
else
    say "running appliance check"
    # As root, with the key where the service finds its credential.
    if CREDENTIALS_DIRECTORY="$etc" timeout 180 "$opt/venv/bin/appliance" check; then
        say "appliance check: all passed"
    else
        say "appliance check failed (exit $?): see above; the install itself is done"
    fi
fi
