#!/usr/bin/env bash
# tests/vm/image-arm64.sh: image.sh for an arm64 guest (VM_ARCH=arm64 tests/vm/run): the Pi's
# own architecture under qemu-system-aarch64 -M virt. Same stages, same outputs, its own cache;
# what differs is that nothing arm64 runs on this (x86) machine: no binfmt_misc, no chroot. So
# every step that runs the guest's programs runs in a boot of the guest's own kernel:
#
#   rootfs-K1  debootstrap --foreign --arch arm64 here; the whole first-stage tree is the initramfs
#              of a first boot whose /init runs debootstrap's second stage, builds gpio-sim.ko
#              against the installed headers, and writes the tree as a tar to a raw disk
#   image-K2   the tree + guest-setup.sh, run by a boot with init=/vmsetup-init on the ext4 image
#   wheels-K3  binary aarch64 wheels by `pip download --platform` here; the two that have none
#              (pyaudio, systemd-python) built from their sdists in a boot of the image, by
#              Debian's own python3 and the image's -dev packages
#
#   tests/vm/image-arm64.sh      prints three lines: IMAGE=dir WHEELS=dir SRVLIB=dir
#
# Cache: $VM_CACHE (default /var/cache/appliance-vm-arm64: not the x86 one, whose stages prune
# every other key of their name). Heavy steps run under nice -n 19 (a shared machine).
set -euo pipefail
exec 3>&1 1>&2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
project=$(cd "$here/../.." && pwd)
CACHE=${VM_CACHE:-/var/cache/appliance-vm-arm64}
ROOTFS_VERSION=arm64-1
SUITE=bookworm
read -r -a install_pkgs < <(sed -n 's/^APT_PACKAGES=(\(.*\))$/\1/p' "$project/install.sh")
PKGS=(systemd systemd-sysv udev kmod dbus linux-image-arm64 linux-headers-arm64 make
      initramfs-tools "${install_pkgs[@]}" alsa-utils gpiod sox iproute2 procps ca-certificates
      less)
log() { printf 'vm image (arm64): %s\n' "$*" >&2; }
ts() { date +%s; }
hash() { sha256sum | cut -c1-12; }
mkdir -p "$CACHE"
MIRROR=${MIRROR:-$(awk '($1 == "deb" || $1 == "URIs:") && $2 ~ /\/debian\/?$/ { print $2; exit }' \
    /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
NICE=(nice -n 19)

# The stage scripts below are part of the keys: a change to how a stage is made remakes it.
self=$(sed -n '/^# ---- rootfs/,/^# ---- image/p' "${BASH_SOURCE[0]}" | hash)
k1=$(printf '%s\n' "$ROOTFS_VERSION" $SUITE "${PKGS[@]}" "$self" | hash)
k2=$( { echo "$k1"; cat "$here/guest-setup.sh"; sed -n '/^# ---- image/,/^# ---- wheel/p' "${BASH_SOURCE[0]}"; } | hash)
k3=$( { echo "$k1"; cat "$project/pyproject.toml"; sed -n '/^# ---- wheel/,$p' "${BASH_SOURCE[0]}"; } | hash)
R=$CACHE/rootfs-$k1 IMG=$CACHE/image-$k2 WH=$CACHE/wheels-$k3

prune() {
    local d
    for d in "$CACHE/$1"-*; do
        [ -e "$d" ] && [ "$d" != "$2" ] && [ "$d" != "$2.tmp" ] && { log "pruning $d"; rm -rf "$d"; }
    done
    return 0
}
# boot LOG QEMU-ARGS...: an arm64 guest under TCG (this machine is x86), no network, no display;
# the guest's init ends by exiting, the kernel panics, panic=-1 reboots and -no-reboot ends qemu.
boot() {
    local logf=$1; shift
    timeout "${VM_BUILD_TIMEOUT:-5400}" "${NICE[@]}" qemu-system-aarch64 -M virt -cpu cortex-a72 \
        -accel tcg,thread=multi,tb-size=256 -smp 2 -display none -monitor none -no-reboot \
        -serial "file:$logf" -nic none -device virtio-rng-pci "$@"
}

# ---- rootfs ---------------------------------------------------------------------------------
if [ ! -e "$R/.done" ]; then
    s=$(ts); B=$R.tmp; rm -rf "$R" "$B"; mkdir -p "$B"
    F=$B/tree
    log "debootstrap --foreign --arch arm64 $SUITE from $MIRROR (first stage, here)"
    "${NICE[@]}" debootstrap --foreign --arch=arm64 --variant=minbase \
        --include="$(IFS=,; echo "${PKGS[*]}")" $SUITE "$F" "$MIRROR" >&2
    log "first stage in $(( $(ts) - s )) s"
    deb=$(ls "$F"/var/cache/apt/archives/linux-image-[0-9]*-arm64_*.deb | head -1)
    kver=$(basename "$deb" | sed 's/^linux-image-\(.*\)_.*_arm64\.deb$/\1/')
    kpkg=$(basename "$deb" | cut -d_ -f2 | sed 's/%3a/:/')
    kmaj=$(echo "$kver" | cut -d. -f1,2)
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$B" "./boot/vmlinuz-$kver"
    # gpio-sim's sources, as for x86 (image.sh): the linux-source package of the same version
    # (architecture all), fetched here; built in the guest against its installed headers.
    ks=$(mktemp -d); src=linux-source-$kmaj
    (cd "$ks" && apt-get download -q "linux-source-$kmaj=$kpkg" >/dev/null)
    dpkg-deb --fsys-tarfile "$ks"/linux-source-"$kmaj"_*.deb | tar -x -C "$ks" ./usr/src/$src.tar.xz
    tar -C "$ks" -xaf "$ks/usr/src/$src.tar.xz" $src/drivers/gpio/gpio-sim.c \
        $src/drivers/gpio/gpiolib.h $src/kernel/irq/irq_sim.c
    b=$F/root/gpiosim; mkdir -p "$b"
    cp "$ks/$src/drivers/gpio/gpio-sim.c" "$b/gpio-sim-core.c"
    cp "$ks/$src/drivers/gpio/gpiolib.h" "$ks/$src/kernel/irq/irq_sim.c" "$b/"
    rm -rf "$ks"
    sed -i 's/handle_simple_irq(irq_to_desc(irqnum));/generic_handle_irq(irqnum);/' "$b/irq_sim.c"
    grep -q 'generic_handle_irq(irqnum);' "$b/irq_sim.c" || { log "irq_sim.c patch did not apply"; exit 1; }
    printf 'obj-m += gpio-sim.o\ngpio-sim-y := gpio-sim-core.o irq_sim.o\n' > "$b/Makefile"
    # The first boot's /init: the tree is the initramfs (a tmpfs root), so no disk driver or
    # filesystem module is needed to start; the result leaves as a tar on the raw disk /dev/vda.
    cat > "$F/init" <<EOF
#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
mount -o remount,size=95% /
t0=\$(cut -d. -f1 /proc/uptime)
echo "VMBUILD: second stage"
/debootstrap/debootstrap --second-stage || { echo "VMBUILD-FAIL: second stage"; tail -30 /debootstrap/debootstrap.log; exit 1; }
echo "VMBUILD: second stage done after \$(( \$(cut -d. -f1 /proc/uptime) - t0 )) s"
make -s -C /lib/modules/$kver/build M=/root/gpiosim -j2 modules || { echo "VMBUILD-FAIL: gpio-sim"; exit 1; }
mkdir -p /lib/modules/$kver/updates; cp /root/gpiosim/gpio-sim.ko /lib/modules/$kver/updates/
depmod $kver; rm -rf /root/gpiosim
echo "VMBUILD: gpio-sim.ko built after \$(( \$(cut -d. -f1 /proc/uptime) - t0 )) s"
apt-get clean
modprobe virtio_pci 2>/dev/null; modprobe virtio_blk; udevadm settle 2>/dev/null
i=0; while [ ! -b /dev/vda ] && [ \$i -lt 30 ]; do sleep 1; i=\$((i + 1)); done
rm -f /init
tar --one-file-system --numeric-owner --xattrs --xattrs-include='*' -C / -cpf /dev/vda . \
    || { echo "VMBUILD-FAIL: tar"; exit 1; }
sync
echo "VMBUILD-OK after \$(( \$(cut -d. -f1 /proc/uptime) - t0 )) s"
EOF
    chmod 755 "$F/init"
    (cd "$F" && find . -print0 | cpio --null -o -H newc --quiet) > "$B/tree.cpio"
    rm -rf "$F"
    truncate -s 4G "$B/out.tar"
    log "first boot: debootstrap's second stage and gpio-sim.ko in the guest (TCG: long)"
    s2=$(ts)
    boot "$B/console.log" -m 4096 -kernel "$B/boot/vmlinuz-$kver" -initrd "$B/tree.cpio" \
        -append "console=ttyAMA0 rdinit=/init panic=-1 loglevel=4" \
        -drive "file=$B/out.tar,if=virtio,format=raw,cache=unsafe" || true
    grep -a 'VMBUILD' "$B/console.log" >&2 || true
    grep -aq 'VMBUILD-OK' "$B/console.log" || { log "the first boot failed: $B/console.log"; tail -40 "$B/console.log" >&2; exit 1; }
    log "first boot in $(( $(ts) - s2 )) s"
    mkdir -p "$B/root"
    tar --numeric-owner --xattrs --xattrs-include='*' -xpf "$B/out.tar" -C "$B/root"
    mv "$B/root" "$R"; mv "$B/console.log" "$R/.build-console.log"; rm -rf "$B"
    touch "$R/.done"; log "rootfs in $(( $(ts) - s )) s"
    prune rootfs "$R"
fi

# ---- image ----------------------------------------------------------------------------------
if [ ! -e "$IMG/.done" ]; then
    s=$(ts); rm -rf "$IMG" "$IMG.tmp"; mkdir -p "$IMG.tmp"
    T=$IMG.tmp/tree
    cp -a "$R" "$T"; rm -f "$T/.done" "$T/.build-console.log"
    cp "$here/guest-setup.sh" "$T/tmp/guest-setup.sh"
    # It runs from /run (a copy), so that nothing on / is open at the end and the filesystem is
    # left clean (remounted read-only), not to be recovered from its journal at every boot.
    cat > "$T/vmsetup-init" <<'EOF'
#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
if [ "$0" != /run/vmsetup-init ]; then
    mount -t proc proc /proc; mount -t sysfs sysfs /sys 2>/dev/null
    mount -t devtmpfs devtmpfs /dev 2>/dev/null; mount -t tmpfs tmpfs /run
    cp "$0" /run/vmsetup-init; exec /bin/sh /run/vmsetup-init
fi
if bash /tmp/guest-setup.sh; then ok=1; else ok=0; fi
rm -f /tmp/guest-setup.sh /vmsetup-init
sync; mount -o remount,ro / && echo "read-only: clean"; sync
[ $ok = 1 ] && echo "VMSETUP-OK" || echo "VMSETUP-FAIL"
EOF
    chmod 755 "$T/vmsetup-init"
    kver=$(basename "$T"/lib/modules/*)
    cp "$T/boot/vmlinuz-$kver" "$IMG.tmp/vmlinuz"; cp "$T/boot/initrd.img-$kver" "$IMG.tmp/initrd.img"
    mkfs.ext4 -q -F -L root -d "$T" "$IMG.tmp/base.img" 4G
    rm -rf "$T"
    boot "$IMG.tmp/setup-console.log" -m 1024 -kernel "$IMG.tmp/vmlinuz" -initrd "$IMG.tmp/initrd.img" \
        -append "root=/dev/vda rw init=/vmsetup-init console=ttyAMA0 panic=-1 loglevel=4" \
        -drive "file=$IMG.tmp/base.img,if=virtio,format=raw,cache=unsafe" || true
    grep -aq 'VMSETUP-OK' "$IMG.tmp/setup-console.log" || { log "guest-setup.sh failed in the guest: $IMG.tmp/setup-console.log"; tail -30 "$IMG.tmp/setup-console.log" >&2; exit 1; }
    touch "$IMG.tmp/.done"; mv "$IMG.tmp" "$IMG"
    log "image in $(( $(ts) - s )) s"
    prune image "$IMG"
fi

# ---- wheelhouse -----------------------------------------------------------------------------
# pip here downloads the aarch64 cp311 wheels (Debian 12's python3 is 3.11, glibc 2.36); pyaudio
# and systemd-python publish none, so their sdists are built in a boot of the image itself (its
# vmtest.service runs the share's guest.sh, here a build script), as a Pi would build them.
if [ ! -e "$WH/.done" ]; then
    s=$(ts); rm -rf "$WH" "$WH.tmp"; mkdir -p "$WH.tmp/wheels" "$WH.tmp/share/out" "$WH.tmp/share/sdist"
    /usr/bin/python3 -m venv "$WH.tmp/venv"
    pip=("$WH.tmp/venv/bin/python" -m pip)
    "${pip[@]}" install -q --upgrade pip >&2
    # pip does not widen an explicit manylinux_2_36 to the older glibcs it runs on: each one.
    target=(--only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none
            --platform manylinux2014_aarch64 --platform linux_aarch64 --platform any)
    for v in $(seq 36 -1 17); do target+=(--platform "manylinux_2_${v}_aarch64"); done
    # The project's requirements (hardware extra included, the Pi's lgpio too), but the two
    # without aarch64 wheels; pip, setuptools and wheel for install.sh's build of the project.
    mapfile -t reqs < <("$WH.tmp/venv/bin/python" - "$project/pyproject.toml" <<'PY'
import re, sys, tomllib
p = tomllib.load(open(sys.argv[1], "rb"))["project"]
for r in p["dependencies"] + p["optional-dependencies"]["hardware"]:
    r = r.split(";")[0].strip()
    if re.match(r"(pyaudio|systemd-python)\b", r, re.I) is None:
        print(r)
PY
)
    "${pip[@]}" download -q -d "$WH.tmp/wheels" "${target[@]}" pip setuptools wheel "${reqs[@]}" >&2
    "${pip[@]}" download -q -d "$WH.tmp/share/sdist" --no-deps --no-binary=:all: \
        "$(grep -o '"pyaudio[^";]*' "$project/pyproject.toml" | tr -d '"')" \
        "$(grep -o '"systemd-python[^";]*' "$project/pyproject.toml" | tr -d '"')" >&2
    "${pip[@]}" install -q --target "$WH.tmp/srvlib" "${target[@]}" aiohttp numpy "openai>=1.103" pydantic >&2
    rm -rf "$WH.tmp/venv"
    cp -r "$WH.tmp/wheels" "$WH.tmp/share/wheels"
    cat > "$WH.tmp/share/guest.sh" <<'EOF'
#!/bin/bash
set -x
S=/mnt/share
python3 -m venv /tmp/v && /tmp/v/bin/pip install -q --no-index --find-links $S/wheels pip setuptools wheel \
  && /tmp/v/bin/pip wheel --no-index --find-links $S/wheels --no-deps -w $S/built $S/sdist/* \
  && echo ok > $S/out/done
systemctl poweroff
EOF
    qemu-img create -q -f qcow2 -b "$IMG/base.img" -F raw "$WH.tmp/run.qcow2"
    log "building pyaudio and systemd-python in the guest"
    boot "$WH.tmp/share/out/console.log" -m 2048 -kernel "$IMG/vmlinuz" -initrd "$IMG/initrd.img" \
        -append "root=/dev/vda rw console=ttyAMA0 loglevel=4 systemd.show_status=0" \
        -drive "file=$WH.tmp/run.qcow2,if=virtio,format=qcow2,cache=unsafe" \
        -virtfs "local,path=$WH.tmp/share,mount_tag=share,security_model=none,id=share" || true
    cat "$WH.tmp/share/out/guest.log" >&2 || true
    [ -e "$WH.tmp/share/out/done" ] || { log "the wheel build in the guest failed: $WH.tmp/share/out"; exit 1; }
    mv "$WH.tmp"/share/built/*.whl "$WH.tmp/wheels/"
    rm -rf "$WH.tmp/share" "$WH.tmp/run.qcow2"
    ls "$WH.tmp/wheels" >&2
    touch "$WH.tmp/.done"; mv "$WH.tmp" "$WH"
    log "wheelhouse in $(( $(ts) - s )) s"
    prune wheels "$WH"
fi
echo "IMAGE=$IMG" >&3
echo "WHEELS=$WH/wheels" >&3
echo "SRVLIB=$WH/srvlib" >&3
