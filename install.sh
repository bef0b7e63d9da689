#!/usr/bin/env bash
# install.sh: set up the appliance.
#
#   sudo ./install.sh          install the appliance into /opt/appliance (own venv),
#                              /etc/appliance/config.yaml (never overwritten), and the key
#   ./install.sh --dev         make .venv in this checkout with the package (editable),
#                              the hardware libraries and the test tools
#   --api-key-file F           take the API key from F instead of asking
#   --root DIR                 install into the directory tree DIR (image builders, tests)
#
# Native packages come from apt when run as root; otherwise the exact apt command is printed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
APT_PACKAGES=(python3 python3-venv python3-dev gcc pkg-config portaudio19-dev libsystemd-dev)
# Test-only tools: espeak-ng speaks test questions, sox converts and measures audio.
APT_DEV_PACKAGES=(espeak-ng sox)

mode=install
root=""
api_key_file=""
python=${PYTHON:-python3}

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --dev) mode=dev ;;
        --root) root=${2:?--root needs a directory}; shift ;;
        --api-key-file) api_key_file=${2:?--api-key-file needs a file}; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

say() { printf 'install.sh: %s\n' "$*"; }

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
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q "$@"
}

if [ "$mode" = dev ]; then
    ensure_apt "${APT_PACKAGES[@]}" "${APT_DEV_PACKAGES[@]}"
    make_venv "$here/.venv" -e "$here[hardware,dev]"
    say "dev environment ready in $here/.venv; run the tests with: .venv/bin/python -m pytest"
    exit 0
fi

# ---- system install -------------------------------------------------------------------
if [ -z "$root" ] && [ "$(id -u)" -ne 0 ]; then
    say "the system install needs root: sudo ./install.sh (or ./install.sh --dev for a checkout)"
    exit 1
fi
[ -z "$root" ] && ensure_apt "${APT_PACKAGES[@]}"

opt="$root/opt/appliance"
etc="$root/etc/appliance"
changed=0

# The application: a copy of the source and its own venv, rebuilt only when the source changed.
stamp=$(cd "$here" && find appliance pyproject.toml -type f -name '*.py' -o -name pyproject.toml \
        | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -d' ' -f1)
if [ "$(cat "$opt/.source-stamp" 2>/dev/null)" != "$stamp" ]; then
    say "installing the application into $opt"
    mkdir -p "$opt/src"
    rm -rf "$opt/src/appliance"
    cp -r "$here/appliance" "$here/pyproject.toml" "$here/README.md" "$here/config.yaml" "$opt/src/"
    find "$opt/src" -name __pycache__ -prune -exec rm -rf {} +
    make_venv "$opt/venv" "$opt/src[hardware]"
    echo "$stamp" > "$opt/.source-stamp"
    changed=1
fi

# The configuration: never overwritten; a newer default goes beside it.
mkdir -p "$etc"
if [ ! -e "$etc/config.yaml" ]; then
    install -m 0640 "$here/config.yaml" "$etc/config.yaml"
    say "wrote $etc/config.yaml: set realtime.folder_id in it"
    changed=1
elif ! cmp -s "$here/config.yaml" "$etc/config.yaml" && ! cmp -s "$here/config.yaml" "$etc/config.yaml.new"; then
    install -m 0640 "$here/config.yaml" "$etc/config.yaml.new"
    say "kept your $etc/config.yaml; the new default is beside it as config.yaml.new"
    changed=1
fi

# The key: asked once, stored 0600, never echoed.
if [ ! -s "$etc/api-key" ]; then
    if [ -n "$api_key_file" ]; then
        install -m 0600 "$api_key_file" "$etc/api-key"
        changed=1
    elif [ -t 0 ]; then
        read -r -s -p "Yandex AI Studio API key (input hidden): " key; echo
        umask 077; printf '%s\n' "$key" > "$etc/api-key"; unset key
        changed=1
    else
        say "no API key yet: put it in $etc/api-key (mode 0600) or run with --api-key-file F"
    fi
fi

if [ "$changed" = 0 ]; then
    say "nothing to change: the appliance is already installed in $opt"
else
    say "installed into $opt"
fi
