#!/bin/sh
# dropship rpm %postun ($1: 0 erase, 1 upgrade). %systemd_postun_with_restart
# by hand: reload units, and on upgrade restart the service only if it runs.
# Like every rpm, an erase keeps a changed agent.toml as agent.toml.rpmsave and
# leaves /var/lib/dropship and the dropship user in place.
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
	if [ "$1" -ge 1 ]; then
		systemctl try-restart dropship.service >/dev/null 2>&1 || :
	fi
fi
exit 0
