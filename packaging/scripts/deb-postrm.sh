#!/bin/sh
# dropship deb postrm. remove: the unit is gone, /etc/dropship/agent.toml and
# /var/lib/dropship (journal, outbox, known_hosts, NATS store) are kept.
# purge: both are deleted, with everything in them. The dropship user and
# group are kept, as Debian does for system users (files elsewhere, e.g. in
# watch folders, may still belong to them).
set -e
unit=dropship.service

if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
	systemctl --system daemon-reload >/dev/null || true
fi
if [ "$1" = remove ] && command -v deb-systemd-helper >/dev/null 2>&1; then
	deb-systemd-helper mask "$unit" >/dev/null || true
fi
if [ "$1" = purge ]; then
	if command -v deb-systemd-helper >/dev/null 2>&1; then
		deb-systemd-helper purge "$unit" >/dev/null || true
		deb-systemd-helper unmask "$unit" >/dev/null || true
	fi
	rm -rf /etc/dropship /var/lib/dropship
fi
exit 0
