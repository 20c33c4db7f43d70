#!/bin/sh
# dropship rpm %post ($1: 1 install, 2 upgrade). %systemd_post by hand: on a
# first install the unit is enabled or not as the system's presets say
# (disabled unless a preset enables it), never started; the packaged
# agent.toml has nothing to send yet. Nothing here needs a running systemd.
chown dropship:dropship /var/lib/dropship 2>/dev/null || :
chmod 0750 /var/lib/dropship 2>/dev/null || :
if [ "$1" -eq 1 ]; then
	chown root:dropship /etc/dropship /etc/dropship/agent.toml 2>/dev/null || :
	chmod 0750 /etc/dropship 2>/dev/null || :
	chmod 0640 /etc/dropship/agent.toml 2>/dev/null || :
	if command -v systemctl >/dev/null 2>&1; then
		systemctl --no-reload preset dropship.service >/dev/null 2>&1 || :
	fi
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
fi
exit 0
