#!/usr/bin/env bash
# tests/vm/image.sh: build (or find in the cache) what tests/vm/run boots: a Debian 12 image
# with systemd, the project's apt packages, Debian's kernel and an out-of-tree gpio-sim module;
# and a wheelhouse, so that neither apt nor pip needs the network inside the guest.
#
#   tests/vm/image.sh            prints three lines: IMAGE=dir WHEELS=dir SRVLIB=dir
#
# Cache: $VM_CACHE (default /var/cache/appliance-vm), one directory per key, older keys pruned:
#   rootfs-K1   debootstrap tree       K1 = the apt package list + ROOTFS_VERSION       (~5 min)
#   image-K2    vmlinuz, initrd, ext4  K2 = K1 + guest-setup.sh                           (~20 s)
#   wheels-K3   wheelhouse + the test  K3 = K1 + pyproject.toml (built by this machine's Debian
#               server's libraries          python3, the guest's own: the guest compiles nothing) (~1 min)
# Needs root and the host's apt mirror (the only network used; the guest has none).
set -euo pipefail
exec 3>&1 1>&2   # stdout is for the three lines at the end only; the tools' chatter goes to stderr
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
project=$(cd "$here/../.." && pwd)
CACHE=${VM_CACHE:-/var/cache/appliance-vm}
ROOTFS_VERSION=1
SUITE=bookworm
# install.sh's APT_PACKAGES (all of them: the guest has no network), the kernel, its headers
# and make (for gpio-sim.ko), and the test tools: alsa-utils (aplay/arecord), gpiod, sox,
# python3-venv for the test server.
read -r -a install_pkgs < <(sed -n 's/^APT_PACKAGES=(\(.*\))$/\1/p' "$project/install.sh")
PKGS=(systemd systemd-sysv udev kmod dbus linux-image-amd64 linux-headers-amd64 make
      initramfs-tools "${install_pkgs[@]}" alsa-utils gpiod sox iproute2 procps ca-certificates
      less)
log() { printf 'vm image: %s\n' "$*" >&2; }
ts() { date +%s; }
hash() { sha256sum | cut -c1-12; }
mkdir -p "$CACHE"
# The Debian mirror this machine's apt uses (the only one reachable where CI runs).
MIRROR=${MIRROR:-$(awk '($1 == "deb" || $1 == "URIs:") && $2 ~ /\/debian\/?$/ { print $2; exit }' \
    /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}

k1=$(printf '%s\n' "$ROOTFS_VERSION" $SUITE "${PKGS[@]}" | hash)
k2=$( { echo "$k1"; cat "$here/guest-setup.sh"; } | hash)
k3=$( { echo "$k1"; cat "$project/pyproject.toml"; } | hash)
R=$CACHE/rootfs-$k1 IMG=$CACHE/image-$k2 WH=$CACHE/wheels-$k3

prune() {  # prune PREFIX KEEP: other keys of the same stage go
    local d
    for d in "$CACHE/$1"-*; do
        [ -e "$d" ] && [ "$d" != "$2" ] && { log "pruning $d"; rm -rf "$d"; }
    done
    return 0
}

# ---- rootfs ---------------------------------------------------------------------------------
if [ ! -e "$R/.done" ]; then
    s=$(ts); rm -rf "$R"
    log "debootstrap $SUITE from $MIRROR into $R (a few minutes)"
    debootstrap --variant=minbase --include="$(IFS=,; echo "${PKGS[*]}")" $SUITE "$R" "$MIRROR" >&2
    # gpio-sim.ko: CONFIG_GPIO_SIM (and CONFIG_IRQ_SIM) are off in Debian 12's kernels; build it
    # from the matching linux-source with its own copy of irq_sim.c (irq_to_desc is not exported:
    # generic_handle_irq instead).
    kver=$(basename "$R"/lib/modules/*)
    kmaj=$(echo "$kver" | cut -d. -f1,2)
    env -u PIP_FIND_LINKS chroot "$R" sh -c "cd /tmp && apt-get download -q linux-source-$kmaj >/dev/null"
    ks=$(mktemp -d); src=linux-source-$kmaj
    dpkg-deb --fsys-tarfile "$R"/tmp/linux-source-"$kmaj"_*.deb | tar -x -C "$ks" ./usr/src/$src.tar.xz
    rm -f "$R"/tmp/linux-source-*.deb
    tar -C "$ks" -xaf "$ks/usr/src/$src.tar.xz" $src/drivers/gpio/gpio-sim.c \
        $src/drivers/gpio/gpiolib.h $src/kernel/irq/irq_sim.c
    b=$R/root/gpiosim; rm -rf "$b"; mkdir -p "$b"
    cp "$ks/$src/drivers/gpio/gpio-sim.c" "$b/gpio-sim-core.c"
    cp "$ks/$src/drivers/gpio/gpiolib.h" "$ks/$src/kernel/irq/irq_sim.c" "$b/"
    rm -rf "$ks"
    sed -i 's/handle_simple_irq(irq_to_desc(irqnum));/generic_handle_irq(irqnum);/' "$b/irq_sim.c"
    grep -q 'generic_handle_irq(irqnum);' "$b/irq_sim.c" || { log "irq_sim.c patch did not apply"; exit 1; }
    printf 'obj-m += gpio-sim.o\ngpio-sim-y := gpio-sim-core.o irq_sim.o\n' > "$b/Makefile"
    chroot "$R" make -s -C "/lib/modules/$kver/build" M=/root/gpiosim modules >&2
    mkdir -p "$R/lib/modules/$kver/updates"; cp "$b/gpio-sim.ko" "$R/lib/modules/$kver/updates/"
    chroot "$R" depmod "$kver"; rm -rf "$b"
    chroot "$R" apt-get clean
    touch "$R/.done"; log "rootfs in $(( $(ts) - s )) s"
    prune rootfs "$R"
fi

# ---- image ----------------------------------------------------------------------------------
if [ ! -e "$IMG/.done" ]; then
    s=$(ts); rm -rf "$IMG" "$IMG.tmp"; mkdir -p "$IMG.tmp"
    # The guest's configuration goes into a throw-away copy of the tree, so the cached rootfs
    # stays as debootstrap left it (apart from gpio-sim) for the wheelhouse builds.
    T=$IMG.tmp/tree
    cp -a "$R" "$T"
    cp "$here/guest-setup.sh" "$T/tmp/guest-setup.sh"
    chroot "$T" bash /tmp/guest-setup.sh >&2
    rm -f "$T/tmp/guest-setup.sh" "$T/.done"
    kver=$(basename "$T"/lib/modules/*)
    cp "$T/boot/vmlinuz-$kver" "$IMG.tmp/vmlinuz"; cp "$T/boot/initrd.img-$kver" "$IMG.tmp/initrd.img"
    mkfs.ext4 -q -F -L root -d "$T" "$IMG.tmp/base.img" 4G
    rm -rf "$T"; touch "$IMG.tmp/.done"; mv "$IMG.tmp" "$IMG"
    log "image in $(( $(ts) - s )) s"
    prune image "$IMG"
fi

# ---- wheelhouse and the test server's libraries -----------------------------------------------
# Built on this machine by Debian's own python3 (the guest's: same version, same Debian, same
# libportaudio2 and libsystemd0 for the two that compile), through pip as configured here.
if [ ! -e "$WH/.done" ]; then
    s=$(ts); rm -rf "$WH" "$WH.tmp"; mkdir -p "$WH.tmp/build"
    cp -r "$project/pyproject.toml" "$project/README.md" "$project/appliance" "$WH.tmp/build/"
    /usr/bin/python3 -m venv "$WH.tmp/venv"
    pip=("$WH.tmp/venv/bin/python" -m pip)
    "${pip[@]}" install -q --upgrade pip wheel >&2
    # lgpio is the Pi's pin factory (the project installs it on Arm only); the guest adds it to
    # the venv by hand to drive gpio-sim, so it is in the wheelhouse too.
    (cd "$WH.tmp" && "${pip[@]}" wheel -q -w "$WH.tmp/wheels" pip setuptools wheel "lgpio>=0.2" "./build[hardware]" >&2)
    rm -f "$WH.tmp"/wheels/appliance-*.whl
    "${pip[@]}" install -q --target "$WH.tmp/srvlib" aiohttp numpy "openai>=1.103" pydantic >&2
    rm -rf "$WH.tmp/venv" "$WH.tmp/build"
    touch "$WH.tmp/.done"; mv "$WH.tmp" "$WH"
    log "wheelhouse in $(( $(ts) - s )) s"
    prune wheels "$WH"
fi
echo "IMAGE=$IMG" >&3
echo "WHEELS=$WH/wheels" >&3
echo "SRVLIB=$WH/srvlib" >&3
