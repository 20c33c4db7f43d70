#!/usr/bin/env bash
# test-packages.sh [--install] — build the .deb and .rpm and check them.
#
# Always (as `make package-test`): `make package`; the .deb's control data
# (dpkg-deb -I: name, version, Depends, conffiles, maintainer scripts) and
# file list with modes and owners (dpkg-deb -c); the packaged agent.toml passes
# `dropship check`; the docs the README links, the man page (a section per
# command, no groff warning) and the bash and zsh completion (run in a real
# bash and zsh); lintian reports no error; the .rpm's metadata, file modes,
# owners, %config(noreplace) and scripts, when `rpm` is there; and the unit:
# `systemd-analyze security --offline=true` scores 2.5 or better with the
# deny list really applied.
#
# With --install (CI, on a throwaway Debian machine, as root or with sudo):
# installs the .deb with apt-get, checks the user, modes and enablement,
# `systemd-analyze verify` on the installed unit, `dropship check` and
# `dropship run` as the dropship user (the sd_notify life cycle through
# packaging/testdata/notifyprobe), the system-call and write audit
# (packaging/syscall-audit.sh), then `dpkg -r` (config kept) and `dpkg -P`
# (config and state removed).
#
# Missing tools (lintian, systemd-analyze, strace, rpm) are installed with
# apt-get when running as root or with sudo; rpm is optional.
set -euo pipefail
cd "$(dirname "$0")/.."

install=0
case ${1:-} in
  --install) install=1 ;;
  "") ;;
  *) echo "usage: $0 [--install]" >&2; exit 2 ;;
esac
export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

fails=0 checks=0
ok() { checks=$((checks + 1)); echo "ok: $*"; }
bad() { checks=$((checks + 1)); fails=$((fails + 1)); echo "FAIL: $*" >&2; }
die() { echo "test-packages: $*" >&2; exit 1; }
# check DESCRIPTION COMMAND...: ok if COMMAND succeeds.
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
# expect DESCRIPTION WANT GOT
expect() { if [ "$2" = "$3" ]; then ok "$1"; else bad "$1: want '$2', got '$3'"; fi; }

apt_install() {
  [ "$(id -u)" -eq 0 ] || command -v sudo >/dev/null || return 1
  if [ -z "${apt_updated:-}" ]; then $sudo apt-get update -qq || return 1; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
need=()
command -v lintian >/dev/null || need+=(lintian)
command -v systemd-analyze >/dev/null || need+=(systemd)
if [ $install -eq 1 ]; then command -v strace >/dev/null || need+=(strace); fi
if [ ${#need[@]} -gt 0 ]; then
  echo "test-packages: installing ${need[*]}"
  apt_install "${need[@]}" || die "cannot install ${need[*]}: install them and run again"
fi
if ! command -v rpm >/dev/null; then
  apt_install rpm || echo "test-packages: rpm is not installable here: the .rpm checks are skipped"
fi

# ---- build -----------------------------------------------------------------
make package
deb=$(ls dist/dropship_*.deb)
rpmfile=$(ls dist/dropship-*.rpm)
if [ "$(echo "$deb" | wc -l)" -ne 1 ] || [ "$(echo "$rpmfile" | wc -l)" -ne 1 ]; then die "expected one .deb and one .rpm in dist/"; fi
version=$(sh packaging/version.sh "$(git describe --tags --always --dirty 2>/dev/null || echo dev)")
arch=$(go env GOARCH)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# ---- .deb: control -------------------------------------------------------------
expect "deb Package" dropship "$(dpkg-deb -f "$deb" Package)"
expect "deb Version" "$version-1" "$(dpkg-deb -f "$deb" Version)"
expect "deb Architecture" "$arch" "$(dpkg-deb -f "$deb" Architecture)"
expect "deb Depends" openssh-client "$(dpkg-deb -f "$deb" Depends)"
dpkg-deb -e "$deb" "$work/control"
expect "deb conffiles" /etc/dropship/agent.toml "$(cat "$work/control/conffiles")"
for s in preinst postinst prerm postrm; do
  if [ -x "$work/control/$s" ] && head -1 "$work/control/$s" | grep -q '^#!/bin/sh'; then ok "deb $s is an executable sh script"; else bad "deb $s missing or not executable"; fi
  sh -n "$work/control/$s" || bad "deb $s: syntax error"
done
# The preinst creates the user from the same line as the sysusers.d file.
if grep -qF "$(grep '^u ' packaging/sysusers.conf | tr -s ' ')" <(tr -s ' ' <"$work/control/preinst"); then
  ok "preinst and sysusers.conf agree on the dropship user"
else
  bad "preinst's sysusers line differs from packaging/sysusers.conf"
fi

for f in packaging/scripts/*.sh; do check "$f: sh syntax" sh -n "$f"; done

# ---- .deb: files, modes, owners ------------------------------------------------
dpkg-deb -c "$deb" | awk '{print $6, $1, $2}' >"$work/deb-files"
while read -r path mode owner; do
  got=$(awk -v p="$path" '$1 == p {print $2, $3}' "$work/deb-files")
  expect "deb $path" "$mode $owner" "$got"
done <<'EOF'
./usr/bin/dropship -rwxr-xr-x root/root
./usr/lib/systemd/system/dropship.service -rw-r--r-- root/root
./usr/lib/sysusers.d/dropship.conf -rw-r--r-- root/root
./etc/dropship/ drwxr-x--- root/dropship
./etc/dropship/agent.toml -rw-r----- root/dropship
./var/lib/dropship/ drwxr-x--- dropship/dropship
./usr/share/doc/dropship/agent.toml.example -rw-r--r-- root/root
./usr/share/doc/dropship/copyright -rw-r--r-- root/root
./usr/share/doc/dropship/changelog.Debian.gz -rw-r--r-- 0/0
./usr/share/doc/dropship/examples/watch-folders.conf -rw-r--r-- root/root
./usr/share/doc/dropship/README.md -rw-r--r-- root/root
./usr/share/doc/dropship/docs/events.md -rw-r--r-- root/root
./usr/share/doc/dropship/docs/threat-model.md -rw-r--r-- root/root
./usr/share/doc/dropship/docs/nats-permissions.md -rw-r--r-- root/root
./usr/share/man/man1/dropship.1.gz -rw-r--r-- root/root
./usr/share/bash-completion/completions/dropship -rw-r--r-- root/root
./usr/share/zsh/vendor-completions/_dropship -rw-r--r-- root/root
./usr/share/lintian/overrides/dropship -rw-r--r-- root/root
EOF
mkdir "$work/deb-root"
dpkg-deb -x "$deb" "$work/deb-root"
check "packaged unit is packaging/dropship.service" cmp -s "$work/deb-root/usr/lib/systemd/system/dropship.service" packaging/dropship.service
check "packaged example is agent.toml.example" cmp -s "$work/deb-root/usr/share/doc/dropship/agent.toml.example" agent.toml.example
if out=$("$work/deb-root/usr/bin/dropship" check -c "$work/deb-root/etc/dropship/agent.toml" 2>&1); then
  ok "packaged agent.toml passes dropship check: $out"
else
  bad "packaged agent.toml fails dropship check: $out"
fi
check "packaged agent.toml: state_dir /var/lib/dropship" grep -q '^state_dir = "/var/lib/dropship"' "$work/deb-root/etc/dropship/agent.toml"
echo "test-packages: packaged binary: $("$work/deb-root/usr/bin/dropship" version)"

# ---- .deb: the docs the README links, the man page, shell completion ----------
doc=$work/deb-root/usr/share/doc/dropship
check "packaged docs/events.md is docs/events.md" cmp -s "$doc/docs/events.md" docs/events.md
for link in $(grep -o '](docs/[a-z0-9-]*\.md)' README.md | sed 's/^](//; s/)$//' | sort -u); do
  check "the README's link $link is in /usr/share/doc/dropship" test -f "$doc/$link"
done
man1=$work/deb-root/usr/share/man/man1/dropship.1.gz
check "packaged man page is docs/dropship.1" cmp -s <(gzip -dc "$man1") docs/dropship.1
if command -v man >/dev/null; then
  warnings=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 -Z "$man1" 2>&1 >/dev/null) || true
  expect "man --warnings on dropship.1 prints nothing" "" "$warnings"
fi
for cmd in $("$work/deb-root/usr/bin/dropship" -h | awk '/^Commands:/ {on=1; next} on && NF == 0 {exit} on {print $1}'); do
  check "the man page has a section on dropship $cmd" grep -q "^\.SS \"$cmd " <(gzip -dc "$man1")
done
bashc=$work/deb-root/usr/share/bash-completion/completions/dropship
got=$(bash --norc --noprofile -c 'source "$1"; COMP_WORDS=(dropship ev); COMP_CWORD=1; _dropship; echo "${COMPREPLY[*]}"' _ "$bashc")
expect "bash completion of 'dropship ev'" events "$got"
got=$(bash --norc --noprofile -c 'source "$1"; COMP_WORDS=(dropship events -js); COMP_CWORD=2; _dropship; echo "${COMPREPLY[*]}"' _ "$bashc")
expect "bash completion of 'dropship events -js'" -json "$got"
if command -v zsh >/dev/null; then
  check "zsh completion: zsh -n" zsh -n "$work/deb-root/usr/share/zsh/vendor-completions/_dropship"
  got=$(zsh -f -c 'fpath=("$1" $fpath); autoload -Uz compinit; compinit -u -d "$2"; print -r -- ${_comps[dropship]}' _ \
    "$work/deb-root/usr/share/zsh/vendor-completions" "$work/zcompdump")
  expect "zsh compinit finds the dropship completion" _dropship "$got"
fi

# ---- lintian -------------------------------------------------------------------
echo "--- lintian (overrides applied; a warning is allowed, an error is not)"
lintian --tag-display-limit 0 "$deb" 2>&1 | grep -v 'running with root privileges' | tee "$work/lintian" || true
if grep -q '^E: ' "$work/lintian"; then bad "lintian reports errors"; else ok "lintian: no error"; fi

# ---- .rpm ----------------------------------------------------------------------
if command -v rpm >/dev/null; then
  q() { rpm -qp --nosignature "$@" "$rpmfile" 2>/dev/null; }
  expect "rpm name-version-release" "dropship-$version-1" "$(q --qf '%{NAME}-%{VERSION}-%{RELEASE}')"
  if q --requires | grep -qx 'openssh-clients'; then ok "rpm requires openssh-clients"; else bad "rpm does not require openssh-clients: $(q --requires | tr '\n' ' ')"; fi
  expect "rpm %config(noreplace)" "/etc/dropship/agent.toml cn" "$(q --qf '[%{FILENAMES} %{FILEFLAGS:fflags}\n]' | grep ' c')"
  q --qf '[%{FILENAMES} %{FILEMODES:perms} %{FILEUSERNAME}/%{FILEGROUPNAME}\n]' >"$work/rpm-files"
  while read -r path mode owner; do
    expect "rpm $path" "$mode $owner" "$(awk -v p="$path" '$1 == p {print $2, $3}' "$work/rpm-files")"
  done <<'EOF'
/usr/bin/dropship -rwxr-xr-x root/root
/usr/lib/systemd/system/dropship.service -rw-r--r-- root/root
/usr/lib/sysusers.d/dropship.conf -rw-r--r-- root/root
/etc/dropship drwxr-x--- root/dropship
/etc/dropship/agent.toml -rw-r----- root/dropship
/var/lib/dropship drwxr-x--- dropship/dropship
/usr/share/doc/dropship/agent.toml.example -rw-r--r-- root/root
/usr/share/doc/dropship/docs/events.md -rw-r--r-- root/root
/usr/share/man/man1/dropship.1.gz -rw-r--r-- root/root
/usr/share/bash-completion/completions/dropship -rw-r--r-- root/root
/usr/share/zsh/site-functions/_dropship -rw-r--r-- root/root
EOF
  if grep -q vendor-completions "$work/rpm-files"; then bad "rpm ships Debian's zsh vendor-completions"; else ok "rpm: zsh completion in site-functions only"; fi
  if grep -q lintian "$work/rpm-files"; then bad "rpm ships the lintian overrides"; else ok "rpm: no lintian overrides"; fi
  scripts=$(q --scripts)
  for s in preinstall postinstall preuninstall postuninstall; do
    if grep -q "^$s scriptlet" <<<"$scripts"; then ok "rpm has a $s scriptlet"; else bad "rpm has no $s scriptlet"; fi
  done
  check "rpm %post applies presets" grep -q 'systemctl --no-reload preset dropship.service' <<<"$scripts"
  check "rpm has a %changelog" test -n "$(q --changelog)"
fi

# ---- the unit, offline ---------------------------------------------------------
security=$(systemd-analyze security --offline=true packaging/dropship.service 2>&1) || true
score=$(sed -nE 's/.*Overall exposure level for dropship\.service: ([0-9.]+).*/\1/p' <<<"$security")
echo "--- systemd-analyze security --offline=true: ${score:-?}"
if [ -n "$score" ] && awk -v s="$score" 'BEGIN { exit !(s <= 2.5) }'; then ok "security exposure $score <= 2.5"; else bad "security exposure '${score:-none}' > 2.5"; echo "$security" >&2; fi
for deny in '~@privileged' '~@resources'; do
  if grep -qE "✓ SystemCallFilter=$deny " <<<"$security"; then ok "SystemCallFilter=$deny applied"; else bad "SystemCallFilter=$deny not applied"; fi
done

# ---- install, run, remove, purge (CI) ------------------------------------------
if [ $install -eq 1 ]; then
  echo "--- install"
  if dpkg -s dropship >/dev/null 2>&1; then $sudo dpkg -P dropship >/dev/null; fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "./$deb" >/dev/null ||
    die "apt-get install ./$deb failed"
  expect "installed version" "$version-1" "$(dpkg-query -W -f '${Version}' dropship)"
  IFS=: read -r _ _ uid _ _ home shell < <(getent passwd dropship) || true
  expect "dropship home" /var/lib/dropship "${home:-}"
  case ${shell:-} in */nologin | /bin/false) ok "dropship shell $shell" ;; *) bad "dropship shell is '${shell:-}'" ;; esac
  check "dropship is a system user (uid ${uid:-none})" test "${uid:-1000}" -lt 1000
  expect "group dropship" dropship "$(getent group dropship | cut -d: -f1)"
  expect "/etc/dropship" "750 root:dropship" "$(stat -c '%a %U:%G' /etc/dropship)"
  expect "/etc/dropship/agent.toml" "640 root:dropship" "$(stat -c '%a %U:%G' /etc/dropship/agent.toml)"
  expect "/var/lib/dropship" "750 dropship:dropship" "$(stat -c '%a %U:%G' /var/lib/dropship)"
  if command -v man >/dev/null; then
    expect "man -w dropship" /usr/share/man/man1/dropship.1.gz "$(man -w dropship 2>&1)"
  fi
  check "unit enabled on install (multi-user.target.wants)" test -L /etc/systemd/system/multi-user.target.wants/dropship.service
  verify=$(systemd-analyze verify /usr/lib/systemd/system/dropship.service 2>&1) || true
  expect "systemd-analyze verify prints nothing" "" "$verify"

  if out=$($sudo runuser -u dropship -- dropship check -c /etc/dropship/agent.toml 2>&1); then
    ok "runuser -u dropship -- dropship check: $out"
  else
    bad "dropship check as the dropship user: $out"
  fi

  echo "--- dropship run as the dropship user, through the sd_notify life cycle"
  go build -o "$work/notifyprobe" ./packaging/testdata/notifyprobe
  chmod 0755 "$work" "$work/notifyprobe"
  # As systemd would start it: the unit's user, home, umask; embedded NATS on 127.0.0.1:4222.
  if $sudo runuser -u dropship -- env -i PATH=/usr/bin:/bin HOME=/var/lib/dropship USER=dropship LOGNAME=dropship \
    sh -c 'umask 0027 && cd / && exec "$0" -timeout 60s -- /usr/bin/dropship run -c /etc/dropship/agent.toml' \
    "$work/notifyprobe" >"$work/run.log" 2>&1; then
    ok "dropship run: READY, reload, WATCHDOG, STOPPING, exit 0"
  else
    bad "dropship run under notifyprobe"
  fi
  sed 's/^/  | /' "$work/run.log"
  check "agent started as the dropship user" grep -q 'msg="agent started"' "$work/run.log"
  if grep -qE 'level=(ERROR|WARN)' "$work/run.log"; then bad "the agent logged warnings or errors"; else ok "no warning or error logged"; fi
  outside=$(find /var/lib/dropship -mindepth 1 ! -user dropship -print -quit)
  check "state written to /var/lib/dropship, all owned by dropship ${outside:+(not: $outside)}" \
    test -z "$outside" -a -n "$(ls -A /var/lib/dropship)"

  echo "--- system calls and writes of the agent, ssh and sftp as the dropship user"
  check "syscall and write audit" $sudo env AUDIT_USER=dropship bash packaging/syscall-audit.sh /usr/bin/dropship /usr/lib/systemd/system/dropship.service

  echo "--- upgrade keeps an edited agent.toml"
  echo '# edited by the operator' | $sudo tee -a /etc/dropship/agent.toml >/dev/null
  before=$(md5sum </etc/dropship/agent.toml)
  make --no-print-directory -s package PKG_VERSION="$version.1" DIST="$work/up" >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$(ls "$work"/up/dropship_*.deb)" >/dev/null ||
    die "upgrade with apt-get install failed"
  expect "upgraded version" "$version.1-1" "$(dpkg-query -W -f '${Version}' dropship)"
  expect "edited agent.toml kept on upgrade" "$before" "$(md5sum </etc/dropship/agent.toml)"
  expect "agent.toml mode and owner after upgrade" "640 root:dropship" "$(stat -c '%a %U:%G' /etc/dropship/agent.toml)"
  check "unit still enabled after upgrade" test -L /etc/systemd/system/multi-user.target.wants/dropship.service

  echo "--- remove and purge"
  $sudo dpkg -r dropship >/dev/null
  check "dpkg -r removes /usr/bin/dropship" test ! -e /usr/bin/dropship
  check "dpkg -r keeps /etc/dropship/agent.toml" test -f /etc/dropship/agent.toml
  check "dpkg -r keeps /var/lib/dropship" test -d /var/lib/dropship
  $sudo dpkg -P dropship >/dev/null
  check "dpkg -P removes /etc/dropship" test ! -e /etc/dropship
  check "dpkg -P removes /var/lib/dropship" test ! -e /var/lib/dropship
  check "dpkg -P removes the enablement link" test ! -e /etc/systemd/system/multi-user.target.wants/dropship.service
fi

echo "package-checks: $((checks - fails)) passed, $fails failed"
[ $fails -eq 0 ]
