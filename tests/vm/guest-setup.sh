#!/bin/bash
# Runs in a chroot of the cached rootfs (tests/vm/image.sh) to make the guest image: no network,
# a one-shot unit that runs the test script from the 9p share, and nothing of the project.
set -euo pipefail
echo appliance-vm > /etc/hostname
printf '127.0.0.1 localhost\n127.0.1.1 appliance-vm\n' > /etc/hosts
printf '/dev/vda / ext4 rw,noatime 0 1\nshare /mnt/share 9p trans=virtio,version=9p2000.L,msize=524288,nofail 0 0\n' > /etc/fstab
mkdir -p /mnt/share /mnt/wheels
passwd -d root >/dev/null
# Faster, quieter boots: nothing periodic runs in a test VM.
systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer \
    man-db.timer >/dev/null 2>&1 || true
# The box's devices, there at every boot before the appliance starts, as on a Pi: the kernel's
# loopback sound card and a gpio-sim chip laid out like the Pi's (58 lines, GPIO0..GPIO57).
cat > /usr/local/sbin/vmtest-devices <<'D'
#!/bin/sh
set -e
modprobe snd-aloop
modprobe gpio-sim
d=/sys/kernel/config/gpio-sim/pi
[ -e $d/live ] && [ "$(cat $d/live)" = 1 ] && exit 0
mkdir -p $d/bank0; echo 58 > $d/bank0/num_lines; echo pinctrl-bcm2711 > $d/bank0/label
i=0; while [ $i -lt 58 ]; do mkdir -p $d/bank0/line$i; echo GPIO$i > $d/bank0/line$i/name; i=$((i + 1)); done
echo 1 > $d/live
udevadm settle
D
chmod 755 /usr/local/sbin/vmtest-devices
cat > /etc/systemd/system/vmtest-devices.service <<'U'
[Unit]
Description=The test box's sound card (snd-aloop) and GPIO chip (gpio-sim)
After=systemd-udevd.service systemd-modules-load.service sys-kernel-config.mount
Before=sound.target appliance.service
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/vmtest-devices
[Install]
WantedBy=multi-user.target
U
systemctl enable vmtest-devices.service >/dev/null 2>&1
cat > /etc/systemd/system/vmtest.service <<'U'
[Unit]
Description=Run the appliance VM test (/mnt/share/guest.sh), then power off
After=multi-user.target
ConditionPathExists=/mnt/share/guest.sh
[Service]
Type=oneshot
StandardOutput=journal+console
ExecStart=/bin/bash -c 'mkdir -p /mnt/share/out; /bin/bash /mnt/share/guest.sh >> /mnt/share/out/guest.log 2>&1'
TimeoutStartSec=3000
[Install]
WantedBy=multi-user.target
U
systemctl enable vmtest.service >/dev/null 2>&1
apt-get clean
