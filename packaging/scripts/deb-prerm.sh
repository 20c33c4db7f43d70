#!/bin/sh
# dropship deb prerm: stop the service on remove (an upgrade restarts it in
# the new postinst instead, so running transfers get their grace only once).
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ] && command -v deb-systemd-invoke >/dev/null 2>&1; then
	deb-systemd-invoke stop dropship.service >/dev/null || true
fi
exit 0
