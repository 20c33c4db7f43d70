#!/usr/bin/env bash
# syscall-audit.sh — does dropship, with the OpenSSH clients it runs, stay
# within what the unit allows? Two checks, for where no systemd can apply the
# unit's restrictions (CI, containers):
#
#  1. System calls: the unit's SystemCallFilter= lines are expanded with
#     `systemd-analyze syscall-filter` (the allow lines, minus the "~" lines);
#     every system call made by any process must be in that set. The children
#     inherit the filter, so ssh and sftp are held to it as well.
#  2. Writes: under ProtectSystem=strict, ProtectHome=yes and PrivateTmp=yes
#     only the state directory, the watch folders (ReadWritePaths=), /tmp and
#     the pseudo devices are writable. Every successful write, create, rename,
#     unlink or socket bind must be inside AUDIT_WRITABLE or the -dev folder
#     (which stands for the state directory and a watch folder).
#
# It runs `dropship run -dev` under `strace -f` (the agent, its embedded NATS,
# the built-in SFTP server, and the real ssh and sftp under a pty), drops one
# file, waits until it arrived byte for byte, stops the agent with SIGTERM and
# reports what would have been refused.
#
# usage: packaging/syscall-audit.sh [DROPSHIP_BINARY] [UNIT_FILE]
# env:   AUDIT_USER      run the agent as this user (strace -u), e.g. dropship;
#                        HOME is set to its home, as systemd's User= does
#        AUDIT_WRITABLE  space-separated writable folders (default: the
#                        user's home, /tmp, /var/tmp)
#        AUDIT_KEEP      keep the trace and the agent's output (set to anything)
# needs: strace, systemd-analyze, openssh-client; root for AUDIT_USER.
# The embedded NATS of -dev listens on 127.0.0.1:4222: it must be free.
set -euo pipefail

bin=${1:-/usr/bin/dropship}
unit=${2:-$(dirname "$0")/dropship.service}
user=${AUDIT_USER:-}
for tool in strace systemd-analyze ssh sftp; do
  command -v "$tool" >/dev/null || { echo "syscall-audit: $tool is missing" >&2; exit 2; }
done
home=$HOME
if [ -n "$user" ]; then
  home=$(getent passwd "$user" | cut -d: -f6)
  [ -n "$home" ] || { echo "syscall-audit: no user $user" >&2; exit 2; }
fi
read -r -a writable <<<"${AUDIT_WRITABLE:-$home /tmp /var/tmp}"

# expand NAME...: every system call in the named groups and calls, recursively.
expand() {
  local item
  for item in "$@"; do
    case $item in
      @*) systemd-analyze syscall-filter "$item" | sed -n '2,$p' | sed -e 's/^ *//' -e '/^#/d' -e '/^$/d' |
            while read -r sub; do expand "$sub"; done ;;
      *) echo "$item" ;;
    esac
  done
}

allow_items=() deny_items=()
while IFS= read -r line; do
  value=${line#SystemCallFilter=}
  if [[ $value == "~"* ]]; then
    read -r -a words <<<"${value#\~}"; deny_items+=("${words[@]}")
  else
    read -r -a words <<<"$value"; allow_items+=("${words[@]}")
  fi
done < <(grep -E '^SystemCallFilter=' "$unit")
[ ${#allow_items[@]} -gt 0 ] || { echo "syscall-audit: no allow-list SystemCallFilter= in $unit" >&2; exit 2; }

pid='' agent=''
work=$(mktemp -d)
cleanup() {
  [ -n "$agent" ] || [ -z "$pid" ] || agent=$(ps -o pid= --ppid "$pid" | tr -d ' ')
  [ -z "$agent" ] || kill -TERM "$agent" 2>/dev/null || true
  [ -z "$pid" ] || wait "$pid" 2>/dev/null || true
  if [ -n "${AUDIT_KEEP:-}" ]; then echo "syscall-audit: kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
expand "${allow_items[@]}" | sort -u >"$work/allowed.all"
if [ ${#deny_items[@]} -gt 0 ]; then expand "${deny_items[@]}" | sort -u >"$work/denied"; else : >"$work/denied"; fi
comm -23 "$work/allowed.all" "$work/denied" >"$work/allowed"
echo "syscall-audit: the filter allows $(wc -l <"$work/allowed") system calls (SystemCallFilter=${allow_items[*]} then ~${deny_items[*]:-})"

mkdir "$work/run"
strace_user=()
if [ -n "$user" ]; then
  chown "$user:" "$work/run"
  chmod 0755 "$work"
  strace_user=(-u "$user")
fi
cd "$work/run"
umask 0027 # the unit's UMask=
# -y: descriptors are printed with the path they refer to.
# -ff: one file per process, so no call is split into "unfinished" and
# "resumed" halves.
strace -f -ff -qq -y "${strace_user[@]}" -o "$work/trace" \
  env HOME="$home" "$bin" run -dev -dev-dir "$work/run/dev" >"$work/out" 2>&1 &
pid=$!
deadline=$((SECONDS + 30))
until grep -q "agent started" "$work/out" 2>/dev/null; do
  [ $SECONDS -lt $deadline ] || { cat "$work/out" >&2; echo "syscall-audit: the agent did not start" >&2; exit 1; }
  kill -0 "$pid" 2>/dev/null || { cat "$work/out" >&2; echo "syscall-audit: the agent exited" >&2; exit 1; }
  sleep 0.2
done
head -c 300000 /dev/urandom >"$work/payload"
# Renamed into the drop folder complete, and owned by the agent's user, as
# a file written by that user would be.
install -m 0640 ${user:+-o "$user"} "$work/payload" "$work/run/dev/drop/.audit.bin"
mv "$work/run/dev/drop/.audit.bin" "$work/run/dev/drop/audit.bin"
deadline=$((SECONDS + 60))
until cmp -s "$work/payload" "$work/run/dev/remote/audit.bin" 2>/dev/null; do
  [ $SECONDS -lt $deadline ] || { cat "$work/out" >&2; echo "syscall-audit: the file did not arrive" >&2; exit 1; }
  sleep 0.2
done
# SIGTERM to strace would only detach it: stop the agent, strace follows.
agent=$(ps -o pid= --ppid "$pid" | tr -d ' ')
kill -TERM "$agent"
wait "$pid" || true
pid='' agent=''
status=0
for f in "$work"/trace.*; do sed "s/^/${f##*.} /" "$f"; done >"$work/trace"

# 1. System calls: "PID name(" lines.
sed -nE 's/^[0-9]+ +([a-z0-9_]+)\(.*/\1/p' "$work/trace" | sort -u >"$work/used"
ssh_runs=$(grep -cE '^[0-9]+ +execve\("[^"]*/(ssh|sftp)", .* = 0$' "$work/trace" || true)
echo "syscall-audit: $(wc -l <"$work/used") distinct system calls made; ssh or sftp started $ssh_runs times"
if [ "$ssh_runs" -eq 0 ]; then
  echo "syscall-audit: FAIL: no ssh or sftp ran, so the audit proves nothing" >&2
  status=1
fi
bad=$(comm -23 "$work/used" "$work/allowed")
if [ -n "$bad" ]; then
  echo "syscall-audit: FAIL: made, but refused by the filter:" >&2
  for s in $bad; do
    echo "  $s: $(grep -m1 -E "^[0-9]+ +$s\(" "$work/trace" | cut -c1-200)" >&2
  done
  status=1
else
  echo "syscall-audit: ok: every system call made is allowed by the filter"
fi

# 2. Writes. With -y, a successful open prints the file it opened
# ("= 7</path>"); a *at call prints its folder ("5</dir>", "name"); a path
# relative to AT_FDCWD is under the working folder, $work/run.
awk -v cwd="$work/run" '
  function emit(p) { if (p != "") print p }
  function joined(dir, name) { return name ~ /^\// ? name : dir "/" name }
  / = -1 / || / <unfinished/ || /resumed>/ { next }
  {
    line = $0
    sub(/^[0-9]+ +/, "", line)
    call = line; sub(/\(.*/, "", call)
  }
  call ~ /^(open|openat|openat2|creat)$/ {
    if (call != "creat" && line !~ /O_WRONLY|O_RDWR|O_CREAT|O_TRUNC/) next
    if (match(line, / = [0-9]+<[^>]*>$/)) { r = substr(line, RSTART, RLENGTH); sub(/^ = [0-9]+</, "", r); sub(/>$/, "", r); emit(r) }
    next
  }
  call ~ /^(mkdir|mkdirat|unlink|unlinkat|rmdir|rename|renameat|renameat2|link|linkat|symlink|symlinkat|chmod|fchmodat|truncate|mknod|mknodat|utimensat)$/ {
    rest = substr(line, length(call) + 2)
    dir = cwd
    while (rest != "") {
      if (match(rest, /^[0-9]+<[^>]*>/)) {
        dir = substr(rest, RSTART, RLENGTH); sub(/^[0-9]+</, "", dir); sub(/>$/, "", dir)
        rest = substr(rest, RLENGTH + 1)
      } else if (match(rest, /^AT_FDCWD/)) {
        dir = cwd; rest = substr(rest, RLENGTH + 1)
      } else if (match(rest, /^"[^"]*"/)) {
        p = substr(rest, 2, RLENGTH - 2); rest = substr(rest, RLENGTH + 1)
        if (call ~ /^symlink/ && !seen_target) { seen_target = 1; continue } # the link text
        emit(joined(dir, p))
      } else {
        rest = substr(rest, 2)
      }
    }
    seen_target = 0
    next
  }
  call == "bind" && match(line, /sun_path="[^"]*"/) {
    p = substr(line, RSTART + 10, RLENGTH - 11)
    if (p ~ /^\//) emit(p)
  }
' "$work/trace" | sort -u >"$work/written"
outside=()
while IFS= read -r p; do
  case $p in
    /dev/null | /dev/tty | /dev/ptmx | /dev/pts/* | /proc/self/* | /proc/thread-self/*) continue ;;
  esac
  inside=no
  for w in "${writable[@]}" "$work/run/dev"; do
    case $p in "$w" | "$w"/*) inside=yes; break ;; esac
  done
  [ $inside = yes ] || outside+=("$p")
done <"$work/written"
echo "syscall-audit: $(wc -l <"$work/written") distinct paths written; writable: ${writable[*]}"
if [ ${#outside[@]} -gt 0 ]; then
  echo "syscall-audit: FAIL: written outside the writable folders (ProtectSystem=strict would refuse):" >&2
  printf '  %s\n' "${outside[@]}" >&2
  status=1
else
  echo "syscall-audit: ok: nothing written outside the writable folders"
fi
failed_writes=$(grep -E '^[0-9]+ +(mkdir|mkdirat|openat)\(.*(O_CREAT|mkdir).* = -1 E(ACCES|ROFS|PERM)' "$work/trace" | cut -c1-200 || true)
[ -z "$failed_writes" ] || { echo "syscall-audit: note: refused attempts to create (harmless if the agent went on):"; while IFS= read -r l; do echo "  $l"; done <<<"$failed_writes"; }
exit $status
