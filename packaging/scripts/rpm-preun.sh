#!/bin/sh
# dropship rpm %preun ($1: 0 erase, 1 upgrade). %systemd_preun by hand: on
# erase, disable and stop the service; an upgrade leaves it to %postun.
if [ "$1" -eq 0 ] && command -v systemctl >/dev/null 2>&1; then
	systemctl --no-reload disable dropship.service >/dev/null 2>&1 || :
	if [ -d /run/systemd/system ]; then
		systemctl stop dropship.service >/dev/null 2>&1 || :
	fi
fi
exit 0
