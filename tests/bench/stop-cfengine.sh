#!/bin/bash
# Stop daemons started by start-cfengine.sh.  Usage: stop-cfengine.sh [WORKDIR]
W=${1:-/tmp/cfe/run}
[ -s "$W/pids" ] || { echo "no $W/pids" >&2; exit 0; }
alive() { [ -d "/proc/$2" ] && [ "$(cat /proc/$2/comm 2>/dev/null)" = "$1" ]; }
while read -r n p; do alive "$n" "$p" && kill -TERM "$p"; done < "$W/pids"
for _ in $(seq 1 50); do
  left=0
  while read -r n p; do alive "$n" "$p" && left=1; done < "$W/pids"
  [ $left = 0 ] && break
  sleep 0.2
done
while read -r n p; do
  if alive "$n" "$p"; then echo "$n $p ignored SIGTERM, SIGKILL" >&2; kill -KILL "$p"; fi
done < "$W/pids"
sleep 0.2
rc=0
while read -r n p; do alive "$n" "$p" && { echo "$n $p STILL RUNNING" >&2; rc=1; }; done < "$W/pids"
[ $rc = 0 ] && : > "$W/pids"
exit $rc
