#!/bin/sh
# version.sh [DESCRIBE] — the package version for `git describe` output (or
# DESCRIBE), valid and correctly ordered for both dpkg and rpm:
#   v1.2.3                  -> 1.2.3
#   v1.2.3-rc.1             -> 1.2.3~rc.1      (sorts before 1.2.3)
#   v1.2.3-4-gabc1234       -> 1.2.3+git4.gabc1234 (after 1.2.3)
#   abc1234 (no tag yet)    -> 0.0.0+git.gabc1234
#   ...-dirty               -> ...+dirty / ....dirty
# A "-" is never left in: dpkg reads it as the revision separator and rpm
# refuses it.
set -eu
d=${1:-$(git describe --tags --always --dirty 2>/dev/null || echo unknown)}
dirty=
case $d in *-dirty) dirty=dirty; d=${d%-dirty} ;; esac
d=${d#v}
after=
# "<tag>-<n>-g<hash>": commits after a tag.
if printf '%s\n' "$d" | grep -Eq -- '-[0-9]+-g[0-9a-f]+$'; then
  after=$(printf '%s\n' "$d" | sed -E 's/.*-([0-9]+)-(g[0-9a-f]+)$/git\1.\2/')
  d=$(printf '%s\n' "$d" | sed -E 's/-[0-9]+-g[0-9a-f]+$//')
fi
case $d in
  [0-9]*.[0-9]*)
    # A pre-release tag such as 1.2.3-rc.1 sorts before 1.2.3.
    base=${d%%-*}
    pre=
    [ "$base" = "$d" ] || pre=$(printf '%s' "${d#*-}" | tr -- '-' '.')
    v=$base
    [ -z "$pre" ] || v="$v~$pre"
    ;;
  *)
    # No tag: only a commit hash (or nothing usable).
    v=0.0.0
    after=git.g$(printf '%s' "$d" | tr -c 'A-Za-z0-9.' '.')
    ;;
esac
if [ -n "$after" ]; then v="$v+$after"; fi
if [ -n "$dirty" ]; then
  case $v in *+*) v="$v.$dirty" ;; *) v="$v+$dirty" ;; esac
fi
printf '%s\n' "$v"
