#!/usr/bin/env bash
# Boots a small Debian VM (cgroup v2 only, software emulation) and runs a test binary in it.
#
#   tests/vm/run-v2.sh BINARY [ARGS...]
#   tests/vm/run-v2.sh --fetch        (only download and unpack the ingredients)
#
# Ingredients are Debian packages fetched with `apt-get download` and unpacked (never
# installed) into $A2A_VM_CACHE (default: target/vm-cache): qemu-system-x86 and its
# libraries, the cloud kernel, busybox-static. BINARY and the shared libraries `ldd` lists
# for it go into an initramfs whose /init mounts cgroup2 at /sys/fs/cgroup, enables the
# memory, cpu and pids controllers, runs `BINARY ARGS...` and prints `A2A_TEST_EXIT=<code>`.
# The script's exit code is the binary's exit code inside the guest (99 when no marker
# appeared, e.g. the guest crashed or timed out).
set -euo pipefail

if [ $# -lt 1 ]; then
  echo "usage: $0 BINARY [ARGS...]" >&2
  exit 2
fi
FETCH_ONLY=0
if [ "$1" = "--fetch" ]; then
  FETCH_ONLY=1
else
  BINARY=$(readlink -f "$1")
fi
shift
GUEST_ARGS=("$@")

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${A2A_VM_CACHE:-$REPO/target/vm-cache}
ROOT=$CACHE/root
TIMEOUT=${A2A_VM_TIMEOUT:-600}
mkdir -p "$CACHE/debs" "$ROOT"

log() { echo "run-v2: $*" >&2; }

QEMU_PKGS=(qemu-system-x86 qemu-system-common qemu-system-data seabios ipxe-qemu busybox-static
  libcapstone4 libfdt1 libslirp0 libepoxy0 libpmem1 libdaxctl1 libndctl6 libibverbs1 librdmacm1
  libnl-3-200 libnl-route-3-200 libspice-server1 libusb-1.0-0 libusbredirparser1 libvdeplug2
  libcacard0 libbrlapi0.8 libexecs0 libopus0 liborc-0.4-0 libgstreamer-plugins-base1.0-0
  libsndio7.0 libgstreamer1.0-0 libjpeg62-turbo libpixman-1-0 libaio1 liburing2 libgbm1
  libpng16-16 libsasl2-2 libnuma1 libdw1 libelf1 libasound2 libpulse0 libsdl2-2.0-0
  libgnutls30 libjack-jackd2-0 libpipewire-0.3-0 libspa-0.2-modules libxkbcommon0 libvirglrenderer1
  libdrm2 libwayland-server0 libwayland-client0 libx11-6 libxcb1 libxau6 libxdmcp6 libbsd0
  libmd0 libfuse3-3 libgudev-1.0-0 libudev1 libsystemd0)

fetch() {
  if [ -x "$ROOT/usr/bin/qemu-system-x86_64" ] && ls "$ROOT"/boot/vmlinuz-* >/dev/null 2>&1 \
    && [ -x "$ROOT/bin/busybox" ]; then
    return 0
  fi
  command -v apt-get >/dev/null || { log "apt-get is needed to fetch the VM ingredients"; exit 3; }
  local kernel
  kernel=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
  if [ -z "$kernel" ]; then
    log "apt-cache knows no linux-image-cloud-amd64; running apt-get update"
    apt-get update >&2
    kernel=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')
  fi
  [ -n "$kernel" ] || { log "cannot resolve the Debian cloud kernel package"; exit 3; }
  log "downloading ${#QEMU_PKGS[@]} packages and $kernel into $CACHE/debs"
  (cd "$CACHE/debs" && for p in "${QEMU_PKGS[@]}" "$kernel"; do
      ls "${p}"_*.deb >/dev/null 2>&1 || apt-get download "$p" >&2 || log "warning: could not download $p"
    done)
  for deb in "$CACHE"/debs/*.deb; do
    dpkg-deb -x "$deb" "$ROOT"
  done
}

fetch

QEMU=$ROOT/usr/bin/qemu-system-x86_64
KERNEL=$(ls "$ROOT"/boot/vmlinuz-*-cloud-amd64 | head -n1)
LIBPATH=$(find "$ROOT/usr/lib" "$ROOT/lib" -name '*.so*' -printf '%h\n' 2>/dev/null | sort -u | paste -sd:)
missing=$(LD_LIBRARY_PATH=$LIBPATH ldd "$QEMU" | awk '/not found/ {print $1}' || true)
if [ -n "$missing" ]; then
  log "the unpacked qemu misses these libraries (add their packages to QEMU_PKGS): $missing"
  exit 3
fi
if [ "$FETCH_ONLY" = 1 ]; then
  log "VM ingredients ready in $ROOT"
  exit 0
fi

# The guest's root filesystem.
WORK=$(mktemp -d "$CACHE/initramfs.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
chmod 755 "$WORK"
mkdir -p "$WORK"/{bin,sbin,proc,sys,dev,tmp,etc,root}
cp "$ROOT/bin/busybox" "$WORK/bin/busybox"
for applet in sh mount;  do
  ln -s busybox "$WORK/bin/$applet"
done
cp "$BINARY" "$WORK/bin/a2a-test"
# The binary's shared libraries, at the paths the dynamic loader expects.
for lib in $(ldd "$BINARY" | awk '/=> \// {print $3} /^\t\/.*ld-linux/ {print $1}'); do
  mkdir -p "$WORK$(dirname "$lib")"
  cp -L "$lib" "$WORK$lib"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' >"$WORK/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$WORK/etc/group"

args=""
for a in "${GUEST_ARGS[@]}"; do args="$args '${a//\'/\'\\\'\'}'"; done
cat >"$WORK/init" <<INIT
#!/bin/sh
export PATH=/bin:/sbin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup
echo "+memory +cpu +pids" > /sys/fs/cgroup/cgroup.subtree_control
echo "A2A_GUEST_START"
cd /tmp
/bin/a2a-test $args
echo "A2A_TEST_EXIT=\$?"
sync
poweroff -f
INIT
chmod +x "$WORK/init"
(cd "$WORK" && find . | "$ROOT/bin/busybox" cpio -o -H newc 2>/dev/null | gzip -1 >"$CACHE/initrd.gz")

log "booting $(basename "$KERNEL") under emulation (timeout ${TIMEOUT}s)"
OUT=$CACHE/console.log
set +e
LD_LIBRARY_PATH=$LIBPATH timeout "$TIMEOUT" "$QEMU" -accel tcg -cpu max -m 512 -smp 1 -nographic \
  -no-reboot -L "$ROOT/usr/share/seabios" -L "$ROOT/usr/share/qemu" \
  -kernel "$KERNEL" -initrd "$CACHE/initrd.gz" \
  -append "console=ttyS0 panic=-1 quiet cgroup_no_v1=all" </dev/null 2>&1 | tee "$OUT" >&2
set -e
code=$(tr -d '\r' <"$OUT" | sed -n 's/^A2A_TEST_EXIT=\([0-9]*\)$/\1/p' | tail -n1)
if [ -z "$code" ]; then
  log "no A2A_TEST_EXIT marker in the guest's console output ($OUT)"
  exit 99
fi
log "guest test exit code: $code"
exit "$code"
