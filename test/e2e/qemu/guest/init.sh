#!/bin/sh
# PID 1 of guestlink's QEMU test guest (see test/e2e/qemu/image.ts, which packs this file as /init).
# One initramfs serves every test: the kernel command line says what to run.
#   guestlink.mode=agent     the guestlink agent (default), on every guestlink.listen=ADDR given
#                            (repeatable; default tcp:0.0.0.0:7070)
#   guestlink.mode=echo      /bare-port.cjs on the virtio-serial port: the raw-port baseline
#   guestlink.mode=shell     a shell on the console, for poking at the guest by hand
#   guestlink.net=1          configure eth0 for QEMU's user-mode network (10.0.2.15/24, gw 10.0.2.2)
# Whatever runs, the VM powers off when it exits, so QEMU exits too.

/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin /proc /sys /dev /tmp /run /root
/bin/busybox --install -s
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /dev/virtio-ports
mount -t devpts devpts /dev/pts
exec </dev/console >/dev/console 2>&1

say() { echo "guestlink-init: $*"; }
fail() {
  say "FAILED: $*"
  poweroff -f
}

MODE=agent
LISTEN=""
NET=0
for arg in $(cat /proc/cmdline); do
  case "$arg" in
  guestlink.mode=*) MODE="${arg#guestlink.mode=}" ;;
  guestlink.listen=*) LISTEN="$LISTEN --listen ${arg#guestlink.listen=}" ;;
  guestlink.net=*) NET="${arg#guestlink.net=}" ;;
  esac
done
[ -n "$LISTEN" ] || LISTEN="--listen tcp:0.0.0.0:7070"
say "mode $MODE, kernel $(uname -r)"

hostname guestlink-vm
ip link set lo up

# insmod resolves no dependencies: image.ts wrote the modules in the order they load.
while read -r module; do
  insmod "/lib/modules/$module" || say "insmod $module failed"
done </lib/modules/load-order

# There is no udev: name the virtio-serial ports the way it would (/dev/virtio-ports/NAME). A
# port's name arrives from the host after the device is probed, so wait for it.
PORT=/dev/virtio-ports/org.guestlink.0
tries=0
while [ ! -e "$PORT" ] && [ "$tries" -lt 250 ]; do
  for port in /sys/class/virtio-ports/vport*; do
    [ -r "$port/name" ] || continue
    name=$(cat "$port/name")
    dev=$(cat "$port/dev")
    [ -n "$name" ] && [ ! -e "/dev/virtio-ports/$name" ] &&
      mknod "/dev/virtio-ports/$name" c "${dev%%:*}" "${dev##*:}"
  done
  [ -e "$PORT" ] || usleep 20000
  tries=$((tries + 1))
done
[ -e "$PORT" ] && say "virtio-serial port $PORT" || say "no virtio-serial port $PORT"

if [ "$NET" = 1 ]; then
  tries=0
  while [ ! -e /sys/class/net/eth0 ] && [ "$tries" -lt 250 ]; do
    usleep 20000
    tries=$((tries + 1))
  done
  ip addr add 10.0.2.15/24 dev eth0 && ip link set eth0 up && ip route add default via 10.0.2.2 ||
    fail "no network: eth0 could not be configured"
  say "eth0 10.0.2.15/24"
fi

case "$MODE" in
agent)
  # The agent logs to stderr, which is the console: its lines show in QEMU's output.
  # --insecure: tcp:0.0.0.0 here is QEMU's user-mode network, reached only through the port the
  # host forwards on its loopback (vm.ts), so the agent needs no key.
  # shellcheck disable=SC2086 # LISTEN is a list of words
  node /guestlink-agent.cjs agent $LISTEN --insecure --id guestlink-vm &
  pid=$!
  say "agent started (pid $pid):$LISTEN"
  ;;
echo)
  node /bare-port.cjs "$PORT" &
  pid=$!
  say "echo started (pid $pid) on $PORT"
  ;;
shell)
  setsid cttyhack sh &
  pid=$!
  say "shell started (pid $pid)"
  ;;
*) fail "unknown guestlink.mode=$MODE" ;;
esac

wait "$pid"
status=$?
say "$MODE exited with status $status; powering off"
sync
poweroff -f
