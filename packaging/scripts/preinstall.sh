#!/bin/sh
# dropship preinstall (deb preinst, rpm %pre): create the dropship system
# user and group before the files they own are unpacked. Idempotent.
set -e

# The same entry as /usr/lib/sysusers.d/dropship.conf, which is not unpacked yet.
sysusers='u dropship - "dropship file transfer agent" /var/lib/dropship'

if ! getent passwd dropship >/dev/null 2>&1; then
	if command -v systemd-sysusers >/dev/null 2>&1 &&
		printf '%s\n' "$sysusers" | systemd-sysusers --replace=/usr/lib/sysusers.d/dropship.conf - >/dev/null 2>&1 &&
		getent passwd dropship >/dev/null 2>&1; then
		:
	else
		shell=/usr/sbin/nologin
		[ -x "$shell" ] || shell=/sbin/nologin
		[ -x "$shell" ] || shell=/bin/false
		getent group dropship >/dev/null 2>&1 || groupadd --system dropship
		useradd --system --gid dropship --home-dir /var/lib/dropship --no-create-home \
			--shell "$shell" --comment "dropship file transfer agent" dropship
	fi
fi
exit 0
