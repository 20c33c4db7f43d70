#!/bin/sh
# dropship deb postinst. Mirrors what dh_installsystemd generates, with one
# choice of our own: a fresh install enables the unit (it starts at the next
# boot) but does not start it, because the packaged agent.toml has nothing to
# send yet; configure it, then `systemctl start dropship`. An upgrade restarts
# the service only if it was running. Nothing here needs a running systemd;
# deb-systemd-helper and deb-systemd-invoke come from init-system-helpers
# (Essential: yes) and honour policy-rc.d.
set -e

unit=dropship.service

case "$1" in
configure)
	# The user comes from the preinst; make sure what it owns is its own
	# even if it was created only after the files were unpacked.
	chown dropship:dropship /var/lib/dropship
	chmod 0750 /var/lib/dropship
	if [ -z "$2" ]; then
		chown root:dropship /etc/dropship
		chmod 0750 /etc/dropship
		if [ -f /etc/dropship/agent.toml ]; then
			chown root:dropship /etc/dropship/agent.toml
			chmod 0640 /etc/dropship/agent.toml
		fi
	fi
	;;
esac

if [ "$1" = configure ] || [ "$1" = abort-upgrade ] || [ "$1" = abort-deconfigure ] || [ "$1" = abort-remove ]; then
	if command -v deb-systemd-helper >/dev/null 2>&1; then
		# Only removes the mask the postrm set on remove.
		deb-systemd-helper unmask "$unit" >/dev/null || true
		# was-enabled is true on a first install: enable. On upgrade,
		# respect an administrator's disable.
		if deb-systemd-helper --quiet was-enabled "$unit"; then
			deb-systemd-helper enable "$unit" >/dev/null || true
		else
			deb-systemd-helper update-state "$unit" >/dev/null || true
		fi
	fi
	if [ -d /run/systemd/system ]; then
		systemctl --system daemon-reload >/dev/null || true
		if [ -n "$2" ] && command -v deb-systemd-invoke >/dev/null 2>&1; then
			deb-systemd-invoke try-restart "$unit" >/dev/null || true
		fi
	fi
fi
exit 0
