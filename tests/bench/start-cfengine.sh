#!/bin/bash
# Start Debian cfengine3 (3.21.0) cf-serverd, cf-monitord, cf-execd as idle
# background processes (no systemd), using a private work dir, cf-serverd
# bound to 127.0.0.1 only.
# Usage: start-cfengine.sh [WORKDIR] [PORT]   (defaults: /tmp/cfe/run 5308). Used by
# `rollcall-bench agent-footprint --cfengine tests/bench` (Debian package cfengine3).
# Output: one "name pid" line per daemon on stdout (also saved to WORKDIR/pids).
set -euo pipefail

W=${1:-/tmp/cfe/run}
PORT=${2:-5308}
command -v cf-serverd >/dev/null || { echo "cfengine3 not installed" >&2; exit 1; }

# CFEngine 3.21 has no --workdir option; this env var moves the whole work
# dir (inputs, state, ppkeys, bin, outputs, pid files) to $W.
export CFENGINE_TEST_OVERRIDE_WORKDIR=$W

if [ -s "$W/pids" ]; then
  while read -r n p; do
    if [ -d "/proc/$p" ] && [ "$(cat /proc/$p/comm 2>/dev/null)" = "$n" ]; then
      echo "already running: $n $p (run stop-cfengine.sh $W first)" >&2; exit 1
    fi
  done < "$W/pids"
fi

mkdir -p "$W/inputs" "$W/bin" "$W/logs"
chmod 700 "$W" "$W/inputs" "$W/bin"
# Daemons validate policy by running $W/bin/cf-promises. If it is missing they
# fall back to a built-in failsafe policy -> cf-serverd would bind *:5308 !
ln -sf /usr/bin/cf-promises "$W/bin/cf-promises"

cat > "$W/inputs/promises.cf" <<EOF
body common control
{
  bundlesequence => { "main" };
}

bundle agent main
{
}

body executor control
{
  # a class that is never defined -> cf-execd never launches cf-agent
  schedule         => { "cfe_bench_never_defined" };
  splaytime        => "0";
  executorfacility => "LOG_USER";
}

body server control
{
  bindtointerface  => "127.0.0.1";
  port             => "$PORT";
  allowconnects    => { "127.0.0.1" };
  allowallconnects => { "127.0.0.1" };
}

body monitor control
{
  forgetrate => "0.7";
}
EOF
chmod 600 "$W/inputs/promises.cf"
F=$W/inputs/promises.cf

# Host key pair for this work dir (cf-serverd needs it); created once.
[ -s "$W/ppkeys/localhost.priv" ] || cf-key >"$W/logs/cf-key.log" 2>&1

# Refuse to start if the policy does not validate (would trigger failsafe).
cf-promises -c -f "$F" || { echo "policy invalid, not starting" >&2; exit 1; }

start() {  # name -> runs "name --no-fork -f F" in its own session, prints pid
  local n=$1
  setsid "$n" --no-fork -f "$F" </dev/null >"$W/logs/$n.log" 2>&1 &
  local p=$!
  sleep 0.2
  [ "$(cat /proc/$p/comm 2>/dev/null)" = "$n" ] || { echo "$n failed to start, see $W/logs/$n.log" >&2; return 1; }
  echo "$n $p"
}

: > "$W/pids"
line=$(start cf-serverd); echo "$line" >> "$W/pids"; SPID=${line#* }

# NETWORK SAFETY: wait for the listener, require exactly 127.0.0.1:$PORT.
ok=0
for _ in $(seq 1 50); do
  l=$(ss -Hltnp 2>/dev/null | grep "pid=$SPID," | awk '{print $4}' | sort -u || true)
  if [ -n "$l" ]; then
    [ "$l" = "127.0.0.1:$PORT" ] && ok=1
    break
  fi
  sleep 0.2
done
if [ $ok != 1 ]; then
  echo "cf-serverd listens on '${l:-nothing}', not only 127.0.0.1:$PORT -> killing it" >&2
  kill -9 "$SPID" 2>/dev/null || true
  exit 1
fi

start cf-monitord >> "$W/pids"
start cf-execd    >> "$W/pids"
cat "$W/pids"
