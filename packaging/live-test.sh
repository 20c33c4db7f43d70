#!/usr/bin/env bash
# live-test.sh — the packaged service under a real systemd (`make package-live`).
#
# Builds the .deb (twice: this version and a newer one, for the upgrade) and
# the .rpm, boots a minimal Debian 12 under systemd-nspawn (its own network
# namespace: only its loopback; an sshd in it is the target) and drives the
# real unit with systemctl through nsenter: install, start (Type=notify), a
# broken config, a delivery through the sandbox with the README's drop-in
# (ReadWritePaths=, LoadCredential=), a slow sftp upload by another user
# (CAP_LEASE), reload, the watchdog, stop during a transfer, an upgrade with
# files queued, `systemd-analyze security` and `verify`, remove and purge.
# Then the .rpm with `rpm --root` in a throw-away copy of the same rootfs.
# packaging/NOTES.md says what each check proves.
#
# The debootstrapped rootfs is cached in $DROPSHIP_LIVE_CACHE
# (default /var/cache/dropship-live); each run boots a fresh copy of it.
# DROPSHIP_LIVE_FRESH=1 rebuilds the cache; DROPSHIP_LIVE_KEEP=1 keeps the
# work folder (logs, the container's rootfs) for a look afterwards.
#
# Needs: root, debootstrap, systemd-nspawn (systemd-container), rpm, tc
# (iproute2); the first three are installed with apt-get when missing.
# The Debian mirror is the one apt uses here (/etc/apt/sources.list{,.d}).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"
export LC_ALL=C

[ "$(id -u)" -eq 0 ] || { echo "live-test: must run as root (debootstrap, systemd-nspawn)" >&2; exit 2; }

started=$SECONDS
fails=0 checks=0
say() { printf '[%4ds] %s\n' $((SECONDS - started)) "$*"; }
ok() { checks=$((checks + 1)); say "ok: $*"; }
bad() { checks=$((checks + 1)); fails=$((fails + 1)); say "FAIL: $*" >&2; }
die() { say "live-test: FATAL: $*" >&2; exit 1; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
expect() { if [ "$2" = "$3" ]; then ok "$1"; else bad "$1: want '$2', got '$3'"; fi; }
# wait_for SECONDS COMMAND...: poll COMMAND every 0.2 s until it succeeds; 1 on timeout.
wait_for() {
  local end=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || return 1
    sleep 0.2
  done
}

# ---- tools -------------------------------------------------------------------
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
command -v rpm >/dev/null || need+=(rpm)
command -v tc >/dev/null || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null ||
    die "cannot install ${need[*]}"
fi

# ---- the rootfs (cached) -----------------------------------------------------
suite=bookworm
include=systemd,systemd-sysv,dbus,openssh-client,openssh-server
# mirror: the first "deb" source apt uses for $suite (deb822 .sources first, then one-line .list).
mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v suite="$suite" 'BEGIN { RS = "" }
      {
        types = ""; uris = ""; suites = ""; enabled = "yes"
        n = split($0, lines, "\n")
        for (i = 1; i <= n; i++) {
          l = lines[i]
          if (l ~ /^[ \t]*#/) continue
          if (match(l, /^[A-Za-z-]+:/)) {
            k = tolower(substr(l, 1, RLENGTH - 1)); v = " " substr(l, RLENGTH + 1) " "
            gsub(/[ \t]+/, " ", v)
            if (k == "types") types = v; else if (k == "uris") uris = v
            else if (k == "suites") suites = v; else if (k == "enabled") enabled = v
          }
        }
        if (types ~ / deb / && suites ~ (" " suite " ") && enabled !~ /no/) { split(uris, u, " "); print u[1]; exit }
      }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    sed -e 's/\[[^]]*\]//' "$f" | awk -v suite="$suite" '$1 == "deb" && $3 == suite { print $2; exit }'
  done
}
cache=${DROPSHIP_LIVE_CACHE:-/var/cache/dropship-live}
base="$cache/$suite-minbase-$(echo "$include" | md5sum | cut -c1-8)"
if [ -n "${DROPSHIP_LIVE_FRESH:-}" ]; then rm -rf "$base"; fi
if [ ! -f "$base/.dropship-live-complete" ]; then
  url=$(mirror | head -1)
  [ -n "$url" ] || die "no 'deb' source for $suite in /etc/apt/sources.list{,.d}: cannot debootstrap"
  say "debootstrap --variant=minbase $suite from $url (cached in $base)"
  mkdir -p "$cache"
  rm -rf "$base" "$base.tmp"
  timeout 900 debootstrap --variant=minbase --include="$include" "$suite" "$base.tmp" "$url" >"$cache/debootstrap.log" 2>&1 ||
    { tail -20 "$cache/debootstrap.log" >&2; rm -rf "$base.tmp"; die "debootstrap failed (log: $cache/debootstrap.log)"; }
  # Nothing in a packaged apt cache is needed again.
  rm -rf "$base.tmp"/var/cache/apt/archives/*.deb
  touch "$base.tmp/.dropship-live-complete"
  mv "$base.tmp" "$base"
  say "rootfs ready ($(du -sh "$base" | cut -f1))"
else
  say "cached rootfs $base"
fi

# ---- packages: this version and a newer one ---------------------------------------
work=$(mktemp -d /var/tmp/dropship-live.XXXXXX)
nspawn='' cpid=''
stop_container() {
  [ -n "$nspawn" ] || return 0
  if kill -0 "$nspawn" 2>/dev/null; then
    kill -TERM "$nspawn" 2>/dev/null || true # nspawn halts the container's systemd
    local end=$((SECONDS + 30))
    while kill -0 "$nspawn" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.2; done
    kill -KILL "$nspawn" 2>/dev/null || true
  fi
  wait "$nspawn" 2>/dev/null || true
  nspawn='' cpid=''
}
cleanup() {
  local rc=$?
  stop_container
  if [ -n "${DROPSHIP_LIVE_KEEP:-}" ]; then say "kept $work"; else rm -rf "$work"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

version=$(sh packaging/version.sh "$(git describe --tags --always --dirty 2>/dev/null || echo dev)")
say "building the packages ($version and $version.1)"
make --no-print-directory -s package DIST="$work/v1" >"$work/build.log" 2>&1 || { tail -20 "$work/build.log" >&2; die "make package failed"; }
make --no-print-directory -s package DIST="$work/v2" PKG_VERSION="$version.1" >>"$work/build.log" 2>&1 || { tail -20 "$work/build.log" >&2; die "make package (newer) failed"; }
deb1=$(ls "$work"/v1/dropship_*.deb) deb2=$(ls "$work"/v2/dropship_*.deb)
rpm1=$(ls "$work"/v1/dropship-*.rpm) rpm2=$(ls "$work"/v2/dropship-*.rpm)

# ---- boot --------------------------------------------------------------------------
root="$work/rootfs"
cp -a "$base" "$root"
cp "$deb1" "$root/root/dropship-v1.deb"
cp "$deb2" "$root/root/dropship-v2.deb"
# The target: sshd in the container, its sftp-server logging every open,
# close and rename (to count deliveries on the server's side).
sed -i 's|^Subsystem[[:space:]].*sftp.*|Subsystem sftp /usr/lib/openssh/sftp-server -l INFO|' "$root/etc/ssh/sshd_config"
echo dropship-live >"$root/etc/hostname"

say "booting the container"
systemd-nspawn -q -D "$root" --boot --register=no --keep-unit --private-network \
  --machine=dropship-live >"$work/console.log" 2>&1 </dev/null &
nspawn=$!
find_pid1() {
  kill -0 "$nspawn" 2>/dev/null || return 1
  cpid=$(ps -o pid=,comm= --ppid "$nspawn" | awk '$2 == "systemd" { print $1; exit }')
  [ -n "$cpid" ]
}
wait_for 30 find_pid1 || { tail -20 "$work/console.log" >&2; die "the container's systemd did not start"; }

# c COMMAND...: run COMMAND in the container (all its namespaces), clean environment, 120 s at most.
c() {
  timeout --kill-after=5 "${CT:-120}" nsenter -t "$cpid" -a \
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 HOME=/root TERM=dumb "$@"
}
cs() { c bash -c "$1"; }
running() { case $(c systemctl is-system-running 2>/dev/null) in running | degraded) return 0 ;; *) return 1 ;; esac; }
wait_for 60 running || { tail -30 "$work/console.log" >&2; die "the container did not boot: $(c systemctl is-system-running 2>&1 || true)"; }
state=$(c systemctl is-system-running || true)
expect "container booted (systemd $(c systemctl --version | awk 'NR == 1 { print $2 }'), PID 1 on the host: $cpid)" running "$state"
[ "$state" = running ] || c systemctl --failed --no-legend >&2 || true
check "sshd active in the container" wait_for 30 c systemctl is-active -q ssh

prop() { c systemctl show -P "$1" dropship.service; }
cursor() { c journalctl -q -n 0 --show-cursor 2>/dev/null | sed -n 's/^-- cursor: //p'; }
# log_since CURSOR: the unit's journal after CURSOR, message only.
log_since() { c journalctl -q --no-pager -u dropship.service --after-cursor="$1" -o cat; }
# (grep reads it all: an early exit would SIGPIPE journalctl, and pipefail would call it a miss.)
log_has() { log_since "$1" | grep -- "$2" >/dev/null; }
# sftp_renames NAME: how many times sftp-server renamed a file to .../NAME (a completed delivery).
sftp_renames() { c journalctl -q --no-pager -t sftp-server -o cat | grep -cE "rename old \".*\" new \".*/$1\"" || true; }
# delivered_log NAME: "delivered" lines of the agent for NAME.
delivered_log() { c journalctl -q --no-pager -u dropship.service -o cat | grep -c "msg=delivered .*file=[^ ]*/$1 " || true; }
same() { cmp -s "$1" "$2"; }
# The container's loopback, throttled, so that a transfer lasts long enough to be interrupted.
throttle() { nsenter -t "$cpid" -n tc qdisc replace dev lo root tbf rate "$1" burst 256kb latency 2s; }
unthrottle() { nsenter -t "$cpid" -n tc qdisc del dev lo root 2>/dev/null || true; }
active() { [ "$(prop ActiveState)" = active ] && [ "$(prop SubState)" = running ]; }

# ---- install -----------------------------------------------------------------------
say "--- install"
# Everything there is before the package, to compare after the purge.
snapshot() {
  cs 'find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /run -o -path /tmp -o -path /var/tmp \
        -o -path /var/log -o -path /var/cache -o -path /var/lib/apt -o -path /var/lib/dpkg -o -path /root \
        -o -path /srv -o -path /home -o -path /var/lib/systemd/timers -o -path /var/lib/systemd/catalog \) -prune -o -print' | sort
}
snapshot >"$work/before"
c apt-get install -y -qq --no-install-recommends /root/dropship-v1.deb >"$work/install.log" 2>&1 ||
  { cat "$work/install.log" >&2; die "apt-get install ./dropship.deb failed in the container"; }
expect "installed version" "$version-1" "$(c dpkg-query -W -f '${Version}' dropship)"
IFS=: read -r _ _ uid _ _ home shell < <(c getent passwd dropship) || true
check "dropship: system user (uid ${uid:-?}), home ${home:-?}, shell ${shell:-?}" \
  test "${uid:-1000}" -lt 1000 -a "${home:-}" = /var/lib/dropship -a "${shell:-}" = /usr/sbin/nologin
expect "group dropship" dropship "$(c getent group dropship | cut -d: -f1)"
expect "/etc/dropship" "750 root:dropship" "$(c stat -c '%a %U:%G' /etc/dropship)"
expect "/etc/dropship/agent.toml" "640 root:dropship" "$(c stat -c '%a %U:%G' /etc/dropship/agent.toml)"
expect "/var/lib/dropship" "750 dropship:dropship" "$(c stat -c '%a %U:%G' /var/lib/dropship)"
check "agent.toml is a conffile" grep -q '/etc/dropship/agent.toml' <<<"$(c dpkg-query -W -f '${Conffiles}' dropship)"
expect "enabled on install (README: starts at the next boot)" enabled "$(c systemctl is-enabled dropship || true)"
expect "not started on install" inactive "$(c systemctl is-active dropship || true)"
verify=$(c systemd-analyze verify dropship.service 2>&1) || true
expect "systemd-analyze verify dropship.service prints nothing" "" "$verify"
security=$(c systemd-analyze security dropship.service 2>&1) || true
score=$(sed -nE 's/.*Overall exposure level for dropship\.service: ([0-9.]+).*/\1/p' <<<"$security")
if [ -n "$score" ] && awk -v s="$score" 'BEGIN { exit !(s <= 1.4) }'; then
  ok "systemd-analyze security dropship (live): $score <= 1.4"
else
  bad "systemd-analyze security dropship (live): '${score:-none}' > 1.4"; echo "$security" >&2
fi

# ---- start, with the packaged config -------------------------------------------------
say "--- start (packaged config: embedded NATS, nothing to send)"
cur=$(cursor)
t0=$SECONDS
if c systemctl start dropship; then ok "systemctl start dropship returned in $((SECONDS - t0)) s"; else bad "systemctl start dropship"; fi
check "active (running), Type=$(prop Type), NotifyAccess=$(prop NotifyAccess)" active
# Type=notify: start returned only after READY=1, so all of this is up now.
check "ready means NATS is up: 127.0.0.1:4222 answers INFO" cs 'exec 3<>/dev/tcp/127.0.0.1/4222 && head -c 4 <&3 | grep -q INFO'
check "ready means the journal is open: /var/lib/dropship/journal.db" c test -s /var/lib/dropship/journal.db
check "ready means the control service answers: dropship status" c sh -c "dropship status -c /etc/dropship/agent.toml >/dev/null"
check "the agent logged 'agent started'" grep -q 'msg="agent started"' <<<"$(log_since "$cur")"
expect "StateDirectory: /var/lib/dropship owned by dropship" "dropship:dropship" "$(c stat -c '%U:%G' /var/lib/dropship)"
expect "runs as the dropship user" dropship "$(c ps -o user= -p "$(prop MainPID)" 2>/dev/null || cs "stat -c %U /proc/$(prop MainPID)")"
if grep -qE 'level=(ERROR|WARN)' <<<"$(log_since "$cur")"; then bad "warnings or errors logged: $(grep -E 'level=(ERROR|WARN)' <<<"$(log_since "$cur")")"; else ok "no warning or error logged"; fi

say "--- a broken config fails the start, with file:line in the journal, and is not restarted"
cp -p "$root/etc/dropship/agent.toml" "$work/agent.toml.packaged"
echo 'no_such_key = true' >>"$root/etc/dropship/agent.toml"
line=$(wc -l <"$root/etc/dropship/agent.toml")
cur=$(cursor)
if c systemctl restart dropship 2>/dev/null; then bad "systemctl restart with a broken config succeeded"; else ok "systemctl restart with a broken config fails"; fi
expect "state failed" failed "$(prop ActiveState)"
expect "main process exit status 2 (config error)" 2 "$(prop ExecMainStatus)"
check "journalctl -u dropship has /etc/dropship/agent.toml:$line" grep -q "/etc/dropship/agent.toml:$line:" <<<"$(log_since "$cur")"
grep "/etc/dropship/agent.toml:$line:" <<<"$(log_since "$cur")" | head -2 | sed 's/^/  | /'
# RestartPreventExitStatus=2: no restart after RestartSec=5s (a deliberate wait for a non-event).
sleep 7
expect "not restarted (RestartPreventExitStatus=2): NRestarts" 0 "$(prop NRestarts)"
expect "still failed after RestartSec" failed "$(prop ActiveState)"
cp -p "$work/agent.toml.packaged" "$root/etc/dropship/agent.toml"
c systemctl reset-failed dropship || true

# ---- a real delivery, through the sandbox and the README's drop-in ---------------------------
say "--- delivery through the sandbox: README drop-in (ReadWritePaths=, LoadCredential=)"
pw=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
cs "set -e
  useradd -m -d /srv/incoming -s /bin/sh upload
  printf 'upload:%s\n' '$pw' | chpasswd
  chmod 0755 /srv/incoming
  install -d -o upload -g upload /srv/incoming/v2
  useradd -m -s /bin/sh -G dropship partner
  install -d -o root -g dropship -m 2770 /srv/drop/acme
  install -d -m 0700 /srv/stage
  install -d -m 0700 /etc/dropship/credentials
  (umask 077; printf '%s' '$pw' > /etc/dropship/credentials/acme.password)
  install -d -m 0700 /root/.ssh
  ssh-keygen -q -t ed25519 -N '' -f /root/.ssh/id_ed25519
  install -d -o partner -g partner -m 0700 /srv/../home/partner/.ssh
  install -o partner -g partner -m 0600 /root/.ssh/id_ed25519.pub /home/partner/.ssh/authorized_keys
  mkdir -p /etc/systemd/system/dropship.service.d
  printf '[Service]\nReadWritePaths=/srv/drop/acme\nLoadCredential=acme.password:/etc/dropship/credentials/acme.password\n' \
    >/etc/systemd/system/dropship.service.d/override.conf
  systemctl daemon-reload" || die "setting up the target, the watch folder and the drop-in failed"
cat >>"$root/etc/dropship/agent.toml" <<'EOF'

# added by packaging/live-test.sh
[[target]]
name = "acme"
host = "127.0.0.1"
user = "upload"
password_file = "credential:acme.password"
host_key = "HOSTKEY"
remote_dir = "/srv/incoming"

[[watch]]
path = "/srv/drop/acme"
target = "acme"
EOF
sed -i 's/^host_key = "HOSTKEY"/host_key = "accept-new"/' "$root/etc/dropship/agent.toml"
fp=$(c env CREDENTIALS_DIRECTORY=/etc/dropship/credentials dropship hostkey -c /etc/dropship/agent.toml -target acme 2>"$work/hostkey.err") ||
  { cat "$work/hostkey.err" >&2; bad "dropship hostkey -target acme"; }
keys=$(cs 'for k in /etc/ssh/ssh_host_*_key.pub; do ssh-keygen -lf "$k"; done')
if [ -n "$fp" ] && grep -qF "$fp" <<<"$keys"; then ok "dropship hostkey prints the sshd's key: $fp"; else bad "dropship hostkey printed '$fp', not one of: $keys"; fi
sed -i "s|^host_key = \"accept-new\"|host_key = \"$fp\"|" "$root/etc/dropship/agent.toml"
check "dropship check (the edited config)" c dropship check -c /etc/dropship/agent.toml
check "dropship check -connect with the credential (logs in to the sshd)" \
  c env CREDENTIALS_DIRECTORY=/etc/dropship/credentials dropship check -connect -c /etc/dropship/agent.toml
verify=$(c systemd-analyze verify dropship.service 2>&1) || true
expect "systemd-analyze verify with the drop-in prints nothing" "" "$verify"

# One file waiting before the start (found by the first scan), one dropped after.
head -c 300000 /dev/urandom >"$root/srv/stage/before.bin"
cs 'install -m 0640 -g dropship /srv/stage/before.bin /srv/drop/acme/.before.bin && mv /srv/drop/acme/.before.bin /srv/drop/acme/before.bin'
cur=$(cursor)
check "systemctl start with the drop-in" c systemctl start dropship
head -c 1000000 /dev/urandom >"$root/srv/stage/after.bin"
cs 'install -m 0640 -g dropship /srv/stage/after.bin /srv/drop/acme/.after.bin && mv /srv/drop/acme/.after.bin /srv/drop/acme/after.bin'
for f in before.bin after.bin; do
  if wait_for 60 same "$root/srv/stage/$f" "$root/srv/incoming/$f"; then
    ok "$f delivered byte for byte (sftp-server renames: $(sftp_renames "$f"), agent 'delivered': $(delivered_log "$f"))"
  else
    bad "$f not delivered within 60 s"
  fi
done
check "sent files archived in .dropship-sent" wait_for 30 test -f "$root/srv/drop/acme/.dropship-sent/after.bin" -a ! -e "$root/srv/drop/acme/after.bin"
if grep -qE 'level=(ERROR|WARN)' <<<"$(log_since "$cur")"; then bad "warnings or errors logged: $(grep -E 'level=(ERROR|WARN)' <<<"$(log_since "$cur")" | head -5)"; else ok "no warning or error logged"; fi

# ---- a slow upload by another user through sshd's sftp-server ---------------------------------
say "--- slow upload by user partner through sftp-server (CAP_LEASE): never sent early"
# 1 MB through the container's loopback throttled to 2 Mbit/s, and in the
# middle the partner's sftp client is stopped for 8 s: the file stays open in
# sftp-server, unchanged for four times the watch's 2 s settle. The dropship
# user cannot see sftp-server's descriptors (another user's, non-dumpable
# process): only the read lease (CAP_LEASE) shows the file is still open.
head -c 1000000 /dev/urandom >"$root/srv/stage/slow.bin"
chmod 0640 "$root/srv/stage/slow.bin"
throttle 2mbit
(c bash -c 'echo "put /srv/stage/slow.bin /srv/drop/acme/slow.bin" >/run/slow.batch
   sftp -q -b /run/slow.batch -o StrictHostKeyChecking=accept-new -o BatchMode=yes partner@127.0.0.1 &
   echo $! >/run/slow.pid; wait $!' >"$work/sftp.log" 2>&1
 echo $? >"$work/sftp.rc") &
sftp_job=$!
early=''
seen_early() { compgen -G "$root/srv/incoming/*slow*" >/dev/null || compgen -G "$root/srv/incoming/.*slow*" >/dev/null; }
partial() { [ -s "$root/srv/drop/acme/slow.bin" ] && [ "$(stat -c %s "$root/srv/drop/acme/slow.bin")" -lt 1000000 ]; }
if wait_for 30 partial; then
  c bash -c 'kill -STOP "$(cat /run/slow.pid)"'
  paused=$(stat -c %s "$root/srv/drop/acme/slow.bin")
  end=$((SECONDS + 8))
  while [ $SECONDS -lt $end ]; do seen_early && early=yes; sleep 0.2; done
  c bash -c 'kill -CONT "$(cat /run/slow.pid)"'
  ok "the partner's upload paused 8 s at $paused of 1000000 bytes"
else
  bad "the partner's upload was not seen in progress"
fi
while kill -0 $sftp_job 2>/dev/null; do seen_early && early=yes; sleep 0.2; done
wait $sftp_job || true
unthrottle
expect "the partner's sftp upload succeeded" 0 "$(cat "$work/sftp.rc")"
expect "the partner's file belongs to partner" partner "$(c stat -c %U /srv/drop/acme/slow.bin 2>/dev/null || c stat -c %U /srv/drop/acme/.dropship-sent/slow.bin)"
if [ -z "$early" ]; then ok "nothing of slow.bin reached the target while it was being uploaded"; else bad "slow.bin was sent while the partner was still uploading it"; fi
if wait_for 60 same "$root/srv/stage/slow.bin" "$root/srv/incoming/slow.bin"; then ok "slow.bin delivered complete after the upload"; else bad "slow.bin not delivered complete"; fi
expect "slow.bin delivered once (sftp-server renames)" 1 "$(sftp_renames slow.bin)"

# ---- reload ------------------------------------------------------------------------------------------
say "--- systemctl reload"
pid=$(prop MainPID)
sed -i 's|^remote_dir = "/srv/incoming"$|remote_dir = "/srv/incoming/v2"|' "$root/etc/dropship/agent.toml"
cur=$(cursor)
if c systemctl reload dropship; then ok "systemctl reload (changed remote_dir)"; else bad "systemctl reload failed: $(log_since "$cur" | tail -5)"; fi
check "the agent says 'configuration reloaded'" wait_for 20 log_has "$cur" 'configuration reloaded'
head -c 200000 /dev/urandom >"$root/srv/stage/reloaded.bin"
cs 'install -m 0640 -g dropship /srv/stage/reloaded.bin /srv/drop/acme/.r && mv /srv/drop/acme/.r /srv/drop/acme/reloaded.bin'
check "the changed config applies: reloaded.bin went to /srv/incoming/v2" wait_for 60 same "$root/srv/stage/reloaded.bin" "$root/srv/incoming/v2/reloaded.bin"
expect "same main process after reload" "$pid" "$(prop MainPID)"
cp -p "$root/etc/dropship/agent.toml" "$work/agent.toml.good"
echo 'no_such_key = true' >>"$root/etc/dropship/agent.toml"
line=$(wc -l <"$root/etc/dropship/agent.toml")
cur=$(cursor)
if c systemctl reload dropship 2>"$work/reload.err"; then
  say "note: systemctl reload of a broken config returned 0"
else
  ok "systemctl reload of a broken config fails: $(head -1 "$work/reload.err")"
fi
check "broken reload: file:line in journalctl -u dropship" wait_for 20 log_has "$cur" "/etc/dropship/agent.toml:$line:"
check "broken reload: still active (running)" active
expect "broken reload: same main process" "$pid" "$(prop MainPID)"
cp -p "$work/agent.toml.good" "$root/etc/dropship/agent.toml"
check "reload of the good config again" c systemctl reload dropship
head -c 100000 /dev/urandom >"$root/srv/stage/kept.bin"
cs 'install -m 0640 -g dropship /srv/stage/kept.bin /srv/drop/acme/.k && mv /srv/drop/acme/.k /srv/drop/acme/kept.bin'
check "still delivering after the refused reload" wait_for 60 same "$root/srv/stage/kept.bin" "$root/srv/incoming/v2/kept.bin"

# tid NAME: the transfer id the agent queued NAME under.
tid() { c journalctl -q --no-pager -u dropship.service -o cat | sed -n "s/.*msg=queued .*transfer_id=\([^ ]*\) file=[^ ]*\/$1 .*/\1/p" | tail -1; }
# growing NAME: the agent's partial upload of NAME (.dropship-<id>.part) is over 100 kB on the target.
growing() {
  local id
  id=$(tid "$1")
  [ -n "$id" ] && [ -n "$(find "$root/srv/incoming/v2" -name ".dropship-$id.part" -size +100k 2>/dev/null)" ]
}
# settled NAME: the agent has logged NAME's delivery (its journal says done), so counting is final.
settled() { [ "$(delivered_log "$1")" -ge 1 ]; }
drop() { # drop NAME SIZE_MB
  head -c "${2}M" /dev/urandom >"$root/srv/stage/$1"
  cs "install -m 0640 -g dropship /srv/stage/$1 /srv/drop/acme/.$1 && mv /srv/drop/acme/.$1 /srv/drop/acme/$1"
}

# ---- watchdog ----------------------------------------------------------------------------------------
wd=$(prop WatchdogUSec)
say "--- watchdog: agent frozen with SIGSTOP during a transfer (WatchdogUSec=$wd, RestartUSec=$(prop RestartUSec))"
throttle 8mbit
drop frozen.bin 20
if wait_for 60 growing frozen.bin; then ok "frozen.bin is being sent"; else bad "frozen.bin did not start"; fi
pid=$(prop MainPID)
restarts=$(prop NRestarts)
cur=$(cursor)
c bash -c "kill -STOP $pid"
t0=$SECONDS
new_main() { active && [ "$(prop MainPID)" != "$pid" ]; }
# The bound: WatchdogSec (60 s), then the watchdog signal, then RestartSec=5s.
bound=$((60 + 5 + 15))
if wait_for $bound new_main; then
  ok "frozen agent restarted by systemd after $((SECONDS - t0)) s (bound ${bound} s): NRestarts $restarts -> $(prop NRestarts)"
else
  bad "frozen agent not restarted within $bound s: $(prop ActiveState)/$(prop SubState) Result=$(prop Result) ExecMainStatus=$(prop ExecMainStatus)"
  log_since "$cur" | grep -v '^goroutine\|^	\|^$' | tail -15 >&2
  c systemctl start dropship || true
fi
# systemd's own line, in the unit's whole journal (no other watchdog before in this run).
wd_line() { c journalctl -q --no-pager -u dropship.service -o cat | grep -c 'Watchdog timeout' >/dev/null; }
check "journal: watchdog timeout" wait_for 20 wd_line

unthrottle
if wait_for 120 settled frozen.bin && same "$root/srv/stage/frozen.bin" "$root/srv/incoming/v2/frozen.bin"; then
  ok "frozen.bin delivered after the restart"
else
  bad "frozen.bin not delivered after the restart"
fi
expect "frozen.bin: the agent's 'delivered' lines" 1 "$(delivered_log frozen.bin)"
# The frozen agent's sftp child finishes the upload (and its rename) while the
# agent is stopped; the restarted agent sends the file again.
check "frozen.bin delivered once (sftp-server renames: $(sftp_renames frozen.bin))" test "$(sftp_renames frozen.bin)" = 1

# ---- stop during a large transfer --------------------------------------------------------------------
tss=$(prop TimeoutStopUSec)
say "--- systemctl stop during a large transfer (TimeoutStopUSec=$tss, shutdown_grace 30s)"
throttle 8mbit
# 40 MB at 8 Mbit/s: longer than the 30 s grace.
drop big.bin 40
if wait_for 60 growing big.bin; then ok "big.bin is being sent"; else bad "big.bin did not start"; fi
cur=$(cursor)
t0=$SECONDS
c systemctl stop dropship || bad "systemctl stop failed"
took=$((SECONDS - t0))
if [ $took -lt 45 ]; then ok "systemctl stop took $took s (< TimeoutStopSec 45 s)"; else bad "systemctl stop took $took s"; fi
expect "stopped cleanly: Result" success "$(prop Result)"
if grep -q 'timed out. Killing' <<<"$(log_since "$cur")"; then bad "systemd had to SIGKILL"; else ok "no SIGKILL needed"; fi
check "the stop cut big.bin short (not on the target yet: 40 s of sending > 30 s grace)" test ! -e "$root/srv/incoming/v2/big.bin"
unthrottle
check "start again" c systemctl start dropship
if wait_for 120 settled big.bin && same "$root/srv/stage/big.bin" "$root/srv/incoming/v2/big.bin"; then ok "big.bin delivered after the next start"; else bad "big.bin not delivered after the next start"; fi
expect "big.bin delivered once (sftp-server renames)" 1 "$(sftp_renames big.bin)"
expect "big.bin delivered once (agent's 'delivered' lines)" 1 "$(delivered_log big.bin)"
rm -f "$root/srv/stage/big.bin" "$root/srv/incoming/v2/big.bin" "$root/srv/drop/acme/.dropship-sent/big.bin"

# ---- upgrade with files queued --------------------------------------------------------------------------
say "--- upgrade to $version.1 while files are queued"
md5_before=$(md5sum <"$root/etc/dropship/agent.toml")
throttle 8mbit
for i in 1 2 3 4 5 6; do drop "queued$i.bin" 2; done
pid=$(prop MainPID)
wait_for 30 growing queued1.bin || true
c apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confold /root/dropship-v2.deb >"$work/upgrade.log" 2>&1 ||
  { cat "$work/upgrade.log" >&2; bad "apt-get install of the newer package failed"; }
unthrottle
expect "upgraded version" "$version.1-1" "$(c dpkg-query -W -f '${Version}' dropship)"
check "the running service was restarted by the upgrade (main PID $pid -> $(prop MainPID))" sh -c "[ '$(prop MainPID)' != '$pid' ] && [ '$(prop ActiveState)' = active ]"
expect "the edited agent.toml kept" "$md5_before" "$(md5sum <"$root/etc/dropship/agent.toml")"
expect "agent.toml mode and owner after upgrade" "640 root:dropship" "$(c stat -c '%a %U:%G' /etc/dropship/agent.toml)"
expect "still enabled after upgrade" enabled "$(c systemctl is-enabled dropship || true)"
for i in 1 2 3 4 5 6; do
  f=queued$i.bin
  if wait_for 60 settled "$f" && same "$root/srv/stage/$f" "$root/srv/incoming/v2/$f"; then
    expect "$f delivered once across the upgrade (renames, 'delivered')" "1 1" "$(sftp_renames "$f") $(delivered_log "$f")"
  else
    bad "$f lost across the upgrade"
  fi
done

security=$(c systemd-analyze security dropship.service 2>&1) || true
score=$(sed -nE 's/.*Overall exposure level for dropship\.service: ([0-9.]+).*/\1/p' <<<"$security")
if [ -n "$score" ] && awk -v s="$score" 'BEGIN { exit !(s <= 1.4) }'; then ok "systemd-analyze security (running, with drop-in): $score"; else bad "security with drop-in: '${score:-none}'"; fi

# ---- remove and purge ----------------------------------------------------------------------------------
say "--- remove and purge"
c apt-get remove -y -qq dropship >"$work/remove.log" 2>&1 || { cat "$work/remove.log" >&2; bad "apt-get remove"; }
expect "remove: service not active" inactive "$(c systemctl is-active dropship 2>/dev/null || true)"
check "remove: /usr/bin/dropship gone" test ! -e "$root/usr/bin/dropship"
check "remove: the edited agent.toml kept" test "$(md5sum <"$root/etc/dropship/agent.toml")" = "$md5_before"
check "remove: the state kept (/var/lib/dropship/journal.db)" test -s "$root/var/lib/dropship/journal.db"
c apt-get purge -y -qq dropship >"$work/purge.log" 2>&1 || { cat "$work/purge.log" >&2; bad "apt-get purge"; }
check "purge: /etc/dropship gone" test ! -e "$root/etc/dropship"
check "purge: /var/lib/dropship gone" test ! -e "$root/var/lib/dropship"
check "purge: the user and group stay (README)" c getent passwd dropship
c systemctl daemon-reload || true
snapshot >"$work/after"
# What the README promises to leave: the user and group (passwd, group,
# shadow, gshadow and their backups) and the operator's own drop-in.
left=$(comm -13 "$work/before" "$work/after" |
  grep -vxE '/etc/(passwd|group|shadow|gshadow|subuid|subgid)-?|/etc/systemd/system/dropship\.service\.d(/override\.conf)?|/etc/ssh/ssh_host_.*|/home/partner.*' || true)
changed=$(comm -23 "$work/before" "$work/after" || true)
expect "purge leaves nothing else behind" "" "$left"
expect "purge removes nothing that was there before" "" "$changed"

stop_container

# ---- RPM in a throw-away root ------------------------------------------------------------------------
say "--- rpm --root: install, query, upgrade, erase (scriptlets run in the root by rpm's chroot)"
rroot="$work/rpmroot"
cp -a "$base" "$rroot"
R() { timeout 120 rpm --root "$rroot" --dbpath /var/lib/rpm "$@"; }
R --initdb
mkdir -p "$rroot/etc/systemd/system-preset"
echo 'disable dropship.service' >"$rroot/etc/systemd/system-preset/50-rhel-like.preset"
if R -i --nodeps --nosignature "$rpm1" >"$work/rpm.log" 2>&1; then ok "rpm -i $(basename "$rpm1")"; else cat "$work/rpm.log" >&2; bad "rpm -i"; fi
expect "rpm -q" "dropship-$version-1" "$(R -q --qf '%{NAME}-%{VERSION}-%{RELEASE}' dropship)"
v=$(R -V --nodeps dropship 2>&1 || true)
expect "rpm -V: files as packaged" "" "$v"
IFS=: read -r _ _ uid _ _ home shell < <(chroot "$rroot" getent passwd dropship) || true
check "%pre: dropship system user (uid ${uid:-?}, home ${home:-?}, shell ${shell:-?})" test "${uid:-1000}" -lt 1000 -a "${home:-}" = /var/lib/dropship
expect "%post: /var/lib/dropship" "750 dropship:dropship" "$(chroot "$rroot" stat -c '%a %U:%G' /var/lib/dropship)"
expect "%post: /etc/dropship/agent.toml" "640 root:dropship" "$(chroot "$rroot" stat -c '%a %U:%G' /etc/dropship/agent.toml)"
# %post: `systemctl --no-reload preset`. The root's presets here are Debian's
# ("enable *"); a preset file like RHEL's "disable *" stands for an RPM system.
expect "%post: presets applied (a 'disable dropship.service' preset: disabled)" disabled "$(chroot "$rroot" systemctl is-enabled dropship.service 2>/dev/null || true)"
chroot "$rroot" systemctl enable dropship.service >/dev/null 2>&1 || true
echo '# edited' >>"$rroot/etc/dropship/agent.toml"
touch "$rroot/var/lib/dropship/journal.db"
md5_rpm=$(md5sum <"$rroot/etc/dropship/agent.toml")
if R -U --nodeps --nosignature "$rpm2" >>"$work/rpm.log" 2>&1; then ok "rpm -U $(basename "$rpm2")"; else bad "rpm -U"; fi
expect "rpm -q after upgrade" "dropship-$version.1-1" "$(R -q --qf '%{NAME}-%{VERSION}-%{RELEASE}' dropship)"
expect "upgrade keeps the edited agent.toml (noreplace)" "$md5_rpm" "$(md5sum <"$rroot/etc/dropship/agent.toml")"
expect "upgrade keeps the enablement" enabled "$(chroot "$rroot" systemctl is-enabled dropship.service 2>/dev/null || true)"
if R -e dropship >>"$work/rpm.log" 2>&1; then ok "rpm -e"; else bad "rpm -e"; fi
check "rpm -e: not installed" sh -c "! rpm --root '$rroot' -q dropship >/dev/null 2>&1"
check "rpm -e: /usr/bin/dropship gone" test ! -e "$rroot/usr/bin/dropship"
check "rpm -e: edited agent.toml kept as agent.toml.rpmsave" test -f "$rroot/etc/dropship/agent.toml.rpmsave"
check "rpm -e: /var/lib/dropship (with state) kept" test -f "$rroot/var/lib/dropship/journal.db"
check "%preun: disabled on erase" test ! -e "$rroot/etc/systemd/system/multi-user.target.wants/dropship.service"
check "the user stays" chroot "$rroot" getent passwd dropship

say "live-test: $((checks - fails)) passed, $fails failed, in $((SECONDS - started)) s"
[ $fails -eq 0 ]
