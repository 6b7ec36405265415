#!/bin/sh
# /init of the kTLS test guest (busybox sh). tests/ktls/run.sh builds the
# initramfs around it; see there for what is where. It loads the kernel's
# `tls` module, starts the server, and drives it with `openssl s_client`
# (user-space TLS on the client side, so the kernel path is only the
# server's). Every check prints one line
#     KTLS-CHECK <name> PASS|FAIL|NOTIMPL <detail>
# and the run ends with `KTLS-RESULT smtp=... pop3=...` and
# `KTLS-RESULT overall=PASS|FAIL`, then powers off.

/bin/busybox mkdir -p /proc /sys /dev /tmp /var/log
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin
export OPENSSL_CONF=/etc/ssl/openssl.cnf
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
ip link set lo up || ifconfig lo 127.0.0.1 up
hostname ktls-guest
. /etc/ktls/params # DOMAIN PASSWORD MAILDROP SMTP_PORT POP3S_PORT BIG_* MSG_*

LOG=/var/log/mailpopbox.log
FAILS=0
SMTP_STATE=PASS
POP3_STATE=PASS

check() { # NAME STATE DETAIL...
	name=$1 state=$2
	shift 2
	echo "KTLS-CHECK $name $state $*"
	if [ "$state" != PASS ]; then
		FAILS=$((FAILS + 1))
		case $name in
		smtp*) SMTP_STATE=FAIL ;;
		pop3*) [ "$POP3_STATE" = NOTIMPL ] || POP3_STATE=$state ;;
		esac
	fi
}

uptime_cs() { # centiseconds since boot
	read -r up _ </proc/uptime
	echo "${up%.*}${up#*.}"
}

finish() {
	echo "KTLS-RESULT smtp=$SMTP_STATE pop3=$POP3_STATE"
	echo "=== server log ==="
	cat "$LOG" 2>/dev/null
	echo "=== end of server log ==="
	if [ "$FAILS" -eq 0 ]; then
		echo "KTLS-RESULT overall=PASS"
	else
		echo "KTLS-RESULT overall=FAIL failures=$FAILS"
	fi
	sync
	poweroff -f
}

# ---- the kernel's tls module, its dependencies first ---------------------
echo "KTLS-INFO kernel $(uname -r)"
for m in $(cat /etc/ktls/modules); do
	if ! insmod "/lib/modules/$m.ko"; then
		check modules FAIL "insmod $m"
		finish
	fi
done
echo "KTLS-INFO modules loaded: $(cat /etc/ktls/modules | tr '\n' ' ')"

# ---- the server -----------------------------------------------------------
/usr/sbin/mailpopbox /etc/mailpopbox.toml 2>"$LOG" &
SERVER_PID=$!
i=0
while ! grep -q 'event=started' "$LOG" 2>/dev/null; do
	i=$((i + 1))
	if [ $i -gt 300 ] || ! kill -0 $SERVER_PID 2>/dev/null; then
		check startup FAIL "server did not start"
		finish
	fi
	sleep 0.1
done
started=$(grep 'event=started' "$LOG")
case $started in
*ktls=available*) check startup-ktls PASS "$started" ;;
*) check startup-ktls FAIL "startup log does not say ktls=available: $started" ;;
esac

# ---- a tiny expect over s_client ----------------------------------------
# sess_open OUT ARGS...: s_client reads a FIFO held open on fd 3 and writes
# the server's plaintext to OUT; sess_expect waits for a line after the
# last matched one.
sess_open() {
	OUT=$1
	shift
	rm -f /tmp/fifo "$OUT"
	mkfifo /tmp/fifo
	: >"$OUT"
	LOG_MARK=$(wc -l <"$LOG")
	openssl s_client -connect "$@" -quiet -servername "$DOMAIN" \
		</tmp/fifo >"$OUT" 2>"$OUT.err" &
	SC_PID=$!
	exec 3>/tmp/fifo
	SEEN=0
}

sess_send() { printf '%s\r\n' "$1" >&3; }

# sess_expect PATTERN [SECONDS]: 0 when a new line matches, 1 on timeout or
# when s_client has gone. The matched line is in $LINE.
sess_expect() {
	n=0 limit=$((${2:-30} * 10))
	while :; do
		hit=$(tail -n +$((SEEN + 1)) "$OUT" | grep -n -m1 -e "$1")
		if [ -n "$hit" ]; then
			SEEN=$((SEEN + ${hit%%:*}))
			LINE=$(printf '%s' "${hit#*:}" | tr -d '\r')
			return 0
		fi
		n=$((n + 1))
		if [ $n -gt $limit ]; then
			LINE="timeout waiting for /$1/; got: $(tail -n +$((SEEN + 1)) "$OUT" | head -c 300 | tr -d '\r' | tr '\n' '|')"
			return 1
		fi
		if ! kill -0 $SC_PID 2>/dev/null; then
			sleep 0.1
			hit=$(tail -n +$((SEEN + 1)) "$OUT" | grep -n -m1 -e "$1")
			[ -n "$hit" ] && continue
			LINE="s_client exited waiting for /$1/; got: $(tail -n +$((SEEN + 1)) "$OUT" | head -c 300 | tr -d '\r' | tr '\n' '|') stderr: $(tail -c 300 "$OUT.err" | tr '\n' '|')"
			return 1
		fi
		sleep 0.1
	done
}

sess_close() {
	exec 3>&-
	n=0
	while kill -0 $SC_PID 2>/dev/null && [ $n -lt 100 ]; do
		sleep 0.1
		n=$((n + 1))
	done
	kill $SC_PID 2>/dev/null
	wait $SC_PID 2>/dev/null
}

# The session's tls_established line (the server log lines since sess_open).
tls_line() {
	tail -n +$((LOG_MARK + 1)) "$LOG" | grep -m1 'event=tls_established'
}

field() { # KEY LINE
	v=${2#*" $1="}
	[ "$v" = "$2" ] && return 1
	echo "${v%% *}"
}

# ---- POP3S RETR of large messages (before SMTP adds to the maildrop) ------
pop3_test() { # VERSION-FLAG MESSAGE-NUMBERS
	flag=$1 msgs=$2 tag=pop3s-tls${1#-tls}
	sess_open /tmp/pop3.out "127.0.0.1:$POP3S_PORT" "$flag"
	if ! sess_expect '^[+-]' 60; then
		check "$tag-greeting" FAIL "$LINE"
		sess_close
		return
	fi
	tl=$(tls_line)
	tx=$(field ktls_tx "$tl")
	rx=$(field ktls_rx "$tl")
	want_rx=1
	[ "$flag" = -tls1_3 ] && want_rx=0 # OpenSSL 3.0: TLS 1.3 offloads TX only
	if [ "$tx" = 1 ] && [ "$rx" = "$want_rx" ]; then
		check "$tag-ktls" PASS "$tl"
	else
		check "$tag-ktls" FAIL "expected ktls_tx=1 ktls_rx=$want_rx: ${tl:-no tls_established line}"
	fi
	case $LINE in
	*"POP3 not available yet"*)
		POP3_STATE=NOTIMPL
		check "$tag-greeting" NOTIMPL "server answers: $LINE"
		sess_close
		return
		;;
	+OK*) check "$tag-greeting" PASS "$LINE" ;;
	*)
		check "$tag-greeting" FAIL "$LINE"
		sess_close
		return
		;;
	esac
	sess_send "USER mailbox@$DOMAIN"
	if ! sess_expect '^[+-]' || [ "${LINE#+OK}" = "$LINE" ]; then
		check "$tag-login" FAIL "USER: $LINE"
		sess_close
		return
	fi
	sess_send "PASS $PASSWORD"
	if ! sess_expect '^[+-]' || [ "${LINE#+OK}" = "$LINE" ]; then
		check "$tag-login" FAIL "PASS: $LINE"
		sess_close
		return
	fi
	check "$tag-login" PASS "$LINE"
	sess_send "STAT"
	sess_expect '^[+-]'
	if [ "$LINE" = "+OK 2 $((BIG1_SIZE + BIG2_SIZE))" ]; then
		check "$tag-stat" PASS "$LINE"
	else
		check "$tag-stat" FAIL "expected +OK 2 $((BIG1_SIZE + BIG2_SIZE)), got $LINE"
	fi
	for k in $msgs; do
		case $k in
		1) want=$BIG1_SHA size=$BIG1_SIZE what=$BIG1_WHAT ;;
		*) want=$BIG2_SHA size=$BIG2_SIZE what=$BIG2_WHAT ;;
		esac
		off=$(wc -c </tmp/pop3.out)
		t0=$(uptime_cs)
		sess_send "RETR $k"
		n=0 ok=0
		while [ $n -lt 1200 ]; do
			# Done when the output ends in CRLF.CRLF (a stuffed body
			# cannot: its lines that start with "." start with "..").
			if [ "$(tail -c 5 /tmp/pop3.out | od -An -tx1 | tr -d ' \n')" = 0d0a2e0d0a ] &&
				[ "$(wc -c </tmp/pop3.out)" -gt $((off + size)) ]; then
				ok=1
				break
			fi
			kill -0 $SC_PID 2>/dev/null || break
			sleep 0.05
			n=$((n + 1))
		done
		t1=$(uptime_cs)
		got=$(($(wc -c </tmp/pop3.out) - off))
		if [ $ok != 1 ]; then
			check "$tag-retr$k" FAIL "no complete RETR $k response after $(((t1 - t0) / 100)) s ($got bytes): $(tail -c +$((off + 1)) /tmp/pop3.out | head -c 200 | tr -d '\r' | tr '\n' '|')"
			sess_close
			return
		fi
		tail -c +$((off + 1)) /tmp/pop3.out >/tmp/retr.raw
		first=$(head -n 1 /tmp/retr.raw | tr -d '\r')
		# Drop the status line and the final ".CRLF"; undo dot-stuffing.
		tail -n +2 /tmp/retr.raw | head -c -3 | sed 's/^\.//' >/tmp/retr.msg
		have=$(sha256sum /tmp/retr.msg)
		have=${have%% *}
		bytes=$(wc -c </tmp/retr.msg)
		cs=$((t1 - t0))
		[ $cs -gt 0 ] || cs=1
		kbs=$((got * 100 / cs / 1024))
		rate="$((kbs / 1024)).$(((kbs % 1024) * 100 / 1024 / 10))"
		if [ "${first#+OK}" = "$first" ]; then
			check "$tag-retr$k" FAIL "RETR $k answered: $first"
		elif [ "$have" = "$want" ] && [ "$bytes" = "$size" ]; then
			check "$tag-retr$k" PASS "$what: $bytes bytes, sha256 match, $got bytes on the wire in $((cs / 100)).$((cs % 100 / 10))s = ${rate} MB/s"
			echo "KTLS-RATE ${tag}_retr$k=${rate}MB/s bytes=$got centiseconds=$cs"
			# The plain message goes by splice into the kTLS socket,
			# the dotted one through the stuffer.
			mode=$(tail -n +$((LOG_MARK + 1)) "$LOG" | grep "event=retr .* msg=$k " | tail -1)
			wantmode=stream
			[ "$k" = 1 ] && wantmode=splice
			case $mode in
			*"mode=$wantmode"*) check "$tag-retr$k-path" PASS "$mode" ;;
			*) check "$tag-retr$k-path" FAIL "expected mode=$wantmode: ${mode:-no retr line}" ;;
			esac
		else
			check "$tag-retr$k" FAIL "$what: got $bytes bytes sha256 $have, want $size bytes sha256 $want"
			cmp /tmp/retr.msg "/test/big$k.eml" 2>&1 | head -3
		fi
	done
	sess_send "QUIT"
	sess_expect '^[+-]' || true
	sess_close
}

# ---- SMTP STARTTLS delivery ----------------------------------------------
smtp_test() { # VERSION-FLAG (-tls1_2|-tls1_3) RCPT-LOCALPART
	flag=$1 rcpt="$2@$DOMAIN" tag=smtp-tls${1#-tls}
	ls /maildrop/new >/tmp/before
	sess_open /tmp/smtp.out "127.0.0.1:$SMTP_PORT" -starttls smtp "$flag"
	step() { # COMMAND EXPECTED-CODE
		[ -n "$1" ] && sess_send "$1"
		if ! sess_expect '^[0-9][0-9][0-9] ' 60 || [ "${LINE%% *}" != "$2" ]; then
			check "$tag" FAIL "after '${1:-data}': $LINE"
			return 1
		fi
	}
	if step "EHLO client.test" 250 && step "MAIL FROM:<sender@remote.test>" 250 &&
		step "RCPT TO:<$rcpt>" 250 && step "DATA" 354; then
		cat /test/msg.wire >&3
		printf '.\r\n' >&3
		if step "" 250; then
			step QUIT 221 || true
			ok=1
		else
			ok=0
		fi
	else
		ok=0
	fi
	sess_close
	tl=$(tls_line)
	version=$(field version "$tl")
	tx=$(field ktls_tx "$tl")
	rx=$(field ktls_rx "$tl")
	want_rx=1
	[ "$flag" = -tls1_3 ] && want_rx=0 # OpenSSL 3.0: TLS 1.3 offloads TX only
	if [ "$tx" = 1 ] && [ "$rx" = "$want_rx" ]; then
		check "$tag-ktls" PASS "$tl"
	else
		check "$tag-ktls" FAIL "expected ktls_tx=1 ktls_rx=$want_rx: ${tl:-no tls_established line}"
	fi
	[ $ok = 1 ] || return
	ls /maildrop/new >/tmp/after
	new=$(grep -vxF -f /tmp/before /tmp/after)
	if [ "$(echo "$new" | wc -w)" != 1 ]; then
		check "$tag-stored" FAIL "expected one new file in new/, got: $new"
		return
	fi
	f=/maildrop/new/$new
	fsize=$(wc -c <"$f")
	hsize=$((fsize - MSG_SIZE))
	# The file is the server's trace fields, then exactly what was sent.
	tail -c "$MSG_SIZE" "$f" >/tmp/body
	head -c "$hsize" "$f" >/tmp/head
	hbad=$(tr -d '\r' </tmp/head | grep -cvE '^(Return-Path: <sender@remote.test>|Delivered-To: <?'"$rcpt"'>?|Received: .*|[ 	].*)$')
	ssize=${new##*,S=}
	ssize=${ssize%%,*}
	if [ "$ssize" != "$fsize" ]; then
		check "$tag-stored" FAIL "$new: name says S=$ssize, file has $fsize bytes"
	elif ! cmp -s /tmp/body /test/msg.eml; then
		check "$tag-stored" FAIL "$new: the last $MSG_SIZE bytes differ from the message sent: $(cmp /tmp/body /test/msg.eml 2>&1)"
	elif [ "$hsize" -le 0 ] || [ "$hbad" != 0 ] || ! grep -q 'ESMTPS' /tmp/head; then
		check "$tag-stored" FAIL "$new: unexpected trace fields: $(tr -d '\r' </tmp/head | tr '\n' '|')"
	else
		check "$tag-stored" PASS "$version $new: $hsize bytes of trace fields + the $MSG_SIZE bytes sent, exact"
	fi
}

pop3_test -tls1_3 "1 2"
pop3_test -tls1_2 "1"
smtp_test -tls1_2 ktls12
smtp_test -tls1_3 ktls13

# The server must still be alive after all that.
if kill -0 $SERVER_PID 2>/dev/null; then
	check server-alive PASS "pid $SERVER_PID"
	kill -TERM $SERVER_PID
	n=0
	while kill -0 $SERVER_PID 2>/dev/null && [ $n -lt 150 ]; do
		sleep 0.1
		n=$((n + 1))
	done
else
	check server-alive FAIL "the server died"
fi
finish
