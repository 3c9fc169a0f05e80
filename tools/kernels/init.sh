#!/bin/busybox sh
# /init of kubeshaper's test guests (tools/kernels). Busybox only: mount the
# pseudo filesystems, load the modules (no modprobe at boot: they are listed
# in dependency order in /modules.load), mount the host's root filesystem
# read-only over 9p, and run the job script the host wrote
# (ks.job=<dir>/run.sh on the kernel command line) chrooted into it, so the
# tests see the host's tools (ip, tc, nsenter) and the repository at the
# same paths, through an overlay with a tmpfs on top (so the guest may write
# anywhere, and nothing reaches the host). Test output goes to ttyS1; ttyS0
# has the firmware's and the kernel's console.
/bin/busybox --install -s /bin
# The kernel's request_module() runs /sbin/modprobe here (in this root, not
# the tests' chroot): busybox's, over the modules of /lib/modules.
ln -s /bin/modprobe /sbin/modprobe
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec >/dev/ttyS1 2>&1 </dev/null
stty -F /dev/ttyS1 raw -echo 2>/dev/null

say() { echo "KS-GUEST: $*"; }
finish() {
	echo "KS-GUEST-EXIT $1"
	sync
	poweroff -f
	reboot -f
}

rel=$(uname -r)
for m in $(cat /modules.load); do
	insmod "/lib/modules/$rel/$m" || say "insmod $m failed"
done

job=
mounts=
for a in $(cat /proc/cmdline); do
	case "$a" in
	ks.job=*) job=${a#ks.job=} ;;
	ks.mount=*) mounts="$mounts ${a#ks.mount=}" ;;
	esac
done
[ -n "$job" ] || { say "no ks.job= on the kernel command line"; finish 125; }

R=/newroot
mkdir -p $R /lower /rw
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose hostroot /lower ||
	{ say "mounting the host's root over 9p failed"; finish 125; }
mount -t tmpfs -o mode=0755 tmpfs /rw
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay $R || {
	say "overlay over the host's root failed: running on it read-only"
	mount -o bind /lower $R
}
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mount -t bpf bpf $R/sys/fs/bpf
mount -t tmpfs -o mode=1777 tmpfs $R/tmp
mount -t tmpfs -o mode=0755 tmpfs $R/run
mkdir -p $R/run/lock $R/dev/shm
mount -t tmpfs -o mode=1777 tmpfs $R/dev/shm
# This kernel's modules (only those loaded) and config, for modinfo,
# modprobe and tests that read the config.
mkdir -p $R/lib/modules/$rel $R/boot
mount -o bind /lib/modules/$rel $R/lib/modules/$rel
cp /config-$rel $R/boot/ 2>/dev/null
# Host directories that the mounts above hide (a repository under /tmp…).
for m in $mounts; do
	mkdir -p "$R${m#*:}"
	mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose "${m%%:*}" "$R${m#*:}" ||
		say "mounting ${m#*:} over 9p failed"
done
echo 1 >/proc/sys/net/ipv4/ping_group_range 2>/dev/null
echo "0 2147483647" >/proc/sys/net/ipv4/ping_group_range 2>/dev/null
ip link set lo up 2>/dev/null

# CPUs held back at boot (maxcpus=1: guests of over 8 CPUs, qemu.go) come
# online before the job, which then sees all of them.
held=0
for c in /sys/devices/system/cpu/cpu[0-9]*/online; do
	[ "$(cat "$c")" = 1 ] && continue
	echo 1 >"$c" || say "onlining ${c%/online} failed"
	held=$((held + 1))
done
[ "$held" = 0 ] || say "onlined $held CPUs held back at boot"
say "kernel $rel, $(nproc) CPUs, job $job"
chroot $R /bin/sh -c "cd / && exec /bin/sh $job" </dev/null
finish $?
