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
