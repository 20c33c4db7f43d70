#!/bin/sh
# default-config.sh EXAMPLE — print the packaged /etc/dropship/agent.toml:
# agent.toml.example with its comments, every [agent] and [nats] default as
# it is (state_dir /var/lib/dropship, the embedded NATS on 127.0.0.1:4222),
# and its example [[target]] and [[watch]] commented out with a leading "#",
# so the installed agent starts with nothing to do and the operator edits
# the file in place.
set -eu
example=${1:?usage: default-config.sh agent.toml.example}
cat <<'HEAD'
# Installed by the dropship package. Your edits are kept on upgrade (if the
# package's default changed too, it can be left beside this file as
# agent.toml.dpkg-dist or agent.toml.rpmnew).
#
# As installed, the agent runs with an embedded NATS server and nothing to
# send. To put it to work: uncomment and edit a [[target]] and a [[watch]]
# below (remove the leading "#"), make the watched folder writable for the
# service (`systemctl edit dropship`, see
# /usr/share/doc/dropship/examples/watch-folders.conf), then
#   dropship check -c /etc/dropship/agent.toml
#   systemctl restart dropship     # or `systemctl reload dropship` once running
#
HEAD
awk '
  /^\[\[(target|watch)\]\]/ { off = 1 }
  off && $0 != "" && $0 !~ /^#/ { print "#" $0; next }
  { print }
' "$example"
