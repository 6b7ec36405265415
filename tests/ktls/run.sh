#!/bin/bash
# The kernel TLS path, proven on a kernel that has it.
#
# The development machines' kernel has no `tls` module, so this boots
# Debian's own kernel (linux-image-amd64, which has it) under qemu in
# software emulation, with an initramfs that holds busybox, the `tls`
# module and the crypto modules it needs, the server and its libraries,
# and openssl. The guest's /init (tests/ktls/init.sh) checks that:
#   - the server's startup log says ktls=available;
#   - SMTP STARTTLS delivery with TLS 1.2 (ktls_tx=1 ktls_rx=1) and TLS 1.3
#     (ktls_tx=1; OpenSSL 3.0 offloads only TX for 1.3) stores exactly the
#     bytes sent, after the server's trace fields;
#   - POP3S RETR of two large messages (one without lines that need
#     dot-stuffing, one with many) returns exactly the stored bytes over a
#     ktls_tx=1 session, and how fast (qemu TCG: only indicative).
# It prints KTLS-CHECK lines; this script shows them and exits 0 only when
# the guest says KTLS-RESULT overall=PASS.
#
# Usage: tests/ktls/run.sh            (make test-ktls)
# Environment: KTLS_TIMEOUT (s, default 240), KTLS_BIG_MB (default 4),
#   MAILPOPBOX (default build/mailpopbox), KTLS_OUT (default build/ktls).
set -euo pipefail
cd "$(dirname "$0")/../.."
T0=$(date +%s)
OUT=${KTLS_OUT:-build/ktls}
TIMEOUT=${KTLS_TIMEOUT:-240}
BIG_MB=${KTLS_BIG_MB:-4}
SERVER=${MAILPOPBOX:-build/mailpopbox}
DOMAIN=example.test
PASSWORD=ktls-test-password
SMTP_PORT=25
POP3S_PORT=995

say() { echo "ktls: $*"; }
die() {
	echo "ktls: FAIL: $*" >&2
	exit 1
}

[ -x "$SERVER" ] || die "$SERVER is missing: make build/mailpopbox"

# ---- host packages ---------------------------------------------------------
need=""
for p in qemu-system-x86 busybox-static cpio openssl; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || need="$need $p"
done
if [ -n "$need" ]; then
	say "installing:$need"
	(apt-get update -qq || true)
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null ||
		die "apt-get install$need failed"
fi

# ---- Debian's kernel: vmlinuz and the modules we load ----------------------
# linux-image-amd64 is a metapackage; the kernel is its dependency. It is
# unpacked under $OUT/kernel, never installed into the host.
mkdir -p "$OUT"
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -1)
if [ -z "$kpkg" ]; then
	(apt-get update -qq || true)
	kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -1)
fi
[ -n "$kpkg" ] || die "cannot tell which kernel package linux-image-amd64 depends on"
KDIR=$OUT/kernel/$kpkg
if [ ! -s "$KDIR/vmlinuz" ]; then
	say "fetching $kpkg"
	rm -rf "$OUT/deb" "$KDIR.tmp"
	mkdir -p "$OUT/deb" "$KDIR.tmp"
	(cd "$OUT/deb" && apt-get download "$kpkg" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
	deb=$(ls "$OUT"/deb/"$kpkg"_*.deb 2>/dev/null | head -1)
	[ -n "$deb" ] || die "apt-get download $kpkg failed"
	# Only the kernel image and the module directories we can need.
	dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$KDIR.tmp" --wildcards \
		'./boot/vmlinuz-*' './boot/config-*' './lib/modules/*/kernel/net/tls/*' \
		'./lib/modules/*/kernel/crypto/*' './lib/modules/*/kernel/lib/crypto/*' \
		'./lib/modules/*/kernel/arch/x86/crypto/*'
	cp "$KDIR.tmp"/boot/vmlinuz-* "$KDIR.tmp/vmlinuz"
	rm -rf "$KDIR" && mv "$KDIR.tmp" "$KDIR"
	rm -rf "$OUT/deb"
fi
MODROOT=$(ls -d "$KDIR"/lib/modules/*/kernel | head -1)

# The package ships no modules.dep (depmod runs in its postinst); each
# module's .modinfo `depends=` is what depmod would write there. tls.ko
# asks the crypto API for gcm(aes) (and rfc7539 for ChaCha20) at
# setsockopt(TLS_TX/TLS_RX) time, through request_module, which has no
# modprobe in the guest: those templates are loaded up front.
modfile() { # NAME -> path of NAME.ko (- and _ are the same to the kernel)
	local n=${1//[-_]/[-_]}
	find "$MODROOT" -name "$n.ko" -o -name "$n.ko.xz" -o -name "$n.ko.zst" -o -name "$n.ko.gz" | head -1
}
declare -A seen=()
order=()
add_mod() {
	local name=$1 f deps d
	[ -n "${seen[$name]:-}" ] && return 0
	seen[$name]=1
	f=$(modfile "$name")
	[ -n "$f" ] || die "module $name not found in $kpkg"
	deps=$(modinfo_deps "$f")
	for d in ${deps//,/ }; do add_mod "$d"; done
	order+=("$name=$f")
}
modinfo_deps() { # FILE -> the comma-separated depends= of its .modinfo
	case $1 in
	*.xz) xz -dc "$1" ;;
	*.zst) zstd -qdc "$1" ;;
	*.gz) gzip -dc "$1" ;;
	*) cat "$1" ;;
	esac | tr '\0' '\n' | sed -n 's/^depends=//p' | head -1
}
for m in gf128mul ghash-generic ctr gcm chacha_generic poly1305_generic chacha20poly1305 tls; do
	add_mod "$m"
done

# ---- test data ----------------------------------------------------------------
DATA=$OUT/data
mkdir -p "$DATA"
if [ ! -s "$DATA/key.pem" ]; then
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
		-subj "/CN=$DOMAIN" -addext "subjectAltName=DNS:$DOMAIN,DNS:localhost,IP:127.0.0.1" \
		-keyout "$DATA/key.pem" -out "$DATA/cert.pem" 2>/dev/null
fi
# SMTP message (~256 KiB, CRLF, some lines that start with "."): msg.eml is
# what must be stored, msg.wire is the same dot-stuffed for DATA.
gen_msg() { # LINES DOTS(0|1) SUBJECT
	awk -v n="$1" -v dots="$2" -v subj="$3" 'BEGIN {
		printf "From: Sender <sender@remote.test>\r\nTo: <rcpt@'"$DOMAIN"'>\r\n"
		printf "Subject: %s\r\nMessage-ID: <%s@remote.test>\r\n\r\n", subj, subj
		for (i = 1; i <= n; i++) {
			if (dots && i % 7 == 0) printf ".line %07d starts with a dot\r\n", i
			else if (dots && i % 97 == 0) printf ".\r\n"
			else printf "line %07d abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789\r\n", i
		}
	}'
}
gen_msg 3000 1 smtp-ktls >"$DATA/msg.eml"
sed 's/^\./../' "$DATA/msg.eml" >"$DATA/msg.wire"
big_lines=$((BIG_MB * 1024 * 1024 / 79))
gen_msg "$big_lines" 0 big-plain >"$DATA/big1.eml"
gen_msg "$big_lines" 1 big-dotted >"$DATA/big2.eml"

# ---- the initramfs -------------------------------------------------------------
ROOT=$OUT/root
rm -rf "$ROOT"
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,lib/modules,etc/ktls,etc/ssl,test,proc,sys,dev,tmp,var/log}
cp /usr/bin/busybox "$ROOT/bin/busybox"
ln -s busybox "$ROOT/bin/sh"
cp tests/ktls/init.sh "$ROOT/init"
chmod 755 "$ROOT/init"
: >"$ROOT/etc/ktls/modules"
for e in "${order[@]}"; do
	name=${e%%=*} f=${e#*=}
	case $f in
	*.xz) xz -dc "$f" ;;
	*.zst) zstd -qdc "$f" ;;
	*.gz) gzip -dc "$f" ;;
	*) cat "$f" ;;
	esac >"$ROOT/lib/modules/$name.ko"
	echo "$name" >>"$ROOT/etc/ktls/modules"
done
# Binaries with every shared library ldd names, at the same paths, and the
# dynamic loader.
copy_with_libs() { # SRC DEST-IN-ROOT
	cp -L "$1" "$ROOT$2"
	ldd "$1" | awk '/=> \//{print $3} /^[ \t]*\//{print $1}' | while read -r lib; do
		[ -e "$ROOT$lib" ] && continue
		mkdir -p "$ROOT$(dirname "$lib")"
		cp -L "$lib" "$ROOT$lib"
	done
}
copy_with_libs "$SERVER" /usr/sbin/mailpopbox
copy_with_libs /usr/bin/openssl /usr/bin/openssl
cp -L /usr/lib/ssl/openssl.cnf "$ROOT/etc/ssl/openssl.cnf"
cp "$DATA/cert.pem" "$DATA/key.pem" "$ROOT/etc/ktls/"
chmod 600 "$ROOT/etc/ktls/key.pem"
cp "$DATA/msg.eml" "$DATA/msg.wire" "$ROOT/test/"
# The maildrop holds the two large messages; the name's leading seconds
# order them (RETR 1 is big1).
mkdir -p "$ROOT/maildrop"/{new,cur,tmp}
chmod 700 "$ROOT/maildrop" "$ROOT/maildrop"/*
for k in 1 2; do
	size=$(stat -c %s "$DATA/big$k.eml")
	# big1 has no line that starts with "." and ends in CRLF: named plain
	# (",D=0", as the server names such deliveries), RETR splices it to
	# the kTLS socket; big2 is dot-stuffed through user space.
	plain=""
	[ "$k" = 1 ] && plain=",D=0"
	name="100000000$k.M${k}P1.ktls-host$plain,S=$size"
	cp "$DATA/big$k.eml" "$ROOT/maildrop/new/$name"
	cp "$DATA/big$k.eml" "$ROOT/test/big$k.eml"
	touch -d "@100000000$k" "$ROOT/maildrop/new/$name"
done
cat >"$ROOT/etc/mailpopbox.toml" <<EOF
hostname = "ktls.test"
workers = 1
log_level = "debug"

[smtp]
listen = ["127.0.0.1:$SMTP_PORT"]

[pop3s]
listen = ["127.0.0.1:$POP3S_PORT"]

[tls]
ktls = true

[storage]
sync = "full"

[[domain]]
name = "$DOMAIN"
password = "$PASSWORD"
maildrop = "/maildrop"
tls_cert = "/etc/ktls/cert.pem"
tls_key = "/etc/ktls/key.pem"
EOF
"$SERVER" --check "$ROOT/etc/mailpopbox.toml" >/dev/null || die "the guest config does not check"
sha() { sha256sum "$1" | cut -d' ' -f1; }
cat >"$ROOT/etc/ktls/params" <<EOF
DOMAIN=$DOMAIN
PASSWORD=$PASSWORD
SMTP_PORT=$SMTP_PORT
POP3S_PORT=$POP3S_PORT
MSG_SIZE=$(stat -c %s "$DATA/msg.eml")
BIG1_SIZE=$(stat -c %s "$DATA/big1.eml")
BIG1_SHA=$(sha "$DATA/big1.eml")
BIG1_WHAT="no dot-stuffing needed"
BIG2_SIZE=$(stat -c %s "$DATA/big2.eml")
BIG2_SHA=$(sha "$DATA/big2.eml")
BIG2_WHAT="dot-stuffed"
EOF
(cd "$ROOT" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) >"$OUT/initramfs.cpio"
T1=$(date +%s)
say "$kpkg, initramfs $(($(stat -c %s "$OUT/initramfs.cpio") / 1024 / 1024)) MiB, modules: $(tr '\n' ' ' <"$ROOT/etc/ktls/modules")(prepared in $((T1 - T0)) s)"

# ---- boot ----------------------------------------------------------------------
# KVM is present but hangs in this nested VM: TCG. -cpu max gives the guest
# AES-NI/PCLMUL so that both OpenSSL and the kernel take their usual paths.
CONSOLE=$OUT/console.log
say "booting under qemu -accel tcg (timeout ${TIMEOUT}s), console in $CONSOLE"
set +e
timeout -k 5 "$TIMEOUT" qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 1G \
	-nographic -no-reboot -nic none \
	-kernel "$KDIR/vmlinuz" -initrd "$OUT/initramfs.cpio" \
	-append "console=ttyS0 quiet panic=-1 oops=panic" </dev/null >"$CONSOLE" 2>&1
qrc=$?
set -e
T2=$(date +%s)
tr -d '\r' <"$CONSOLE" >"$CONSOLE.txt"
grep -E '^KTLS-(INFO|CHECK|RATE|RESULT)' "$CONSOLE.txt" | sed 's/^/  /' || true
say "qemu ran $((T2 - T1)) s (exit $qrc), total $((T2 - T0)) s"
if [ $qrc -eq 124 ] || [ $qrc -eq 137 ]; then
	tail -40 "$CONSOLE.txt" >&2
	die "timed out after ${TIMEOUT}s"
fi
if grep -q '^KTLS-RESULT overall=PASS' "$CONSOLE.txt"; then
	say "PASS"
	exit 0
fi
if ! grep -q '^KTLS-RESULT overall=' "$CONSOLE.txt"; then
	tail -60 "$CONSOLE.txt" >&2
	die "the guest did not finish (see $CONSOLE.txt)"
fi
sed -n '/^=== server log ===/,/^=== end of server log ===/p' "$CONSOLE.txt" | tail -60 >&2
grep -q '^KTLS-RESULT .*pop3=NOTIMPL' "$CONSOLE.txt" &&
	say "POP3 is not implemented yet in this server (-ERR [SYS/TEMP] POP3 not available yet)"
die "see the KTLS-CHECK lines above and $CONSOLE.txt"
