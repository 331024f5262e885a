#!/bin/bash
# dvc-exec's watchdog, installed on every cloud machine and run every minute by a systemd
# timer. It needs no cloud permissions: it shuts the machine down, and the instance's
# shutdown behaviour (terminate, or stop for kept machines) does the rest.
#
#   dvc-exec-watchdog WORKDIR IDLE_SECONDS MAX_SECONDS [SHUTDOWN COMMAND...]
#
# - MAX_SECONDS after WORKDIR/state/created (written at first boot), the machine goes down,
#   busy or not.
# - IDLE_SECONDS after the last sign of life (WORKDIR/state/last-activity, touched by every
#   dvc-exec call) with no run going on, the machine goes down.
set -u
workdir=$1 idle=$2 max=$3
shift 3
if [ "$#" -gt 0 ]; then shutdown_cmd=("$@"); else shutdown_cmd=(shutdown -h now); fi
state="$workdir/state"
mkdir -p "$state"
now=$(date +%s)
[ -e "$state/created" ] || date +%s > "$state/created"
created=$(cat "$state/created")
[ -e "$state/last-activity" ] || touch "$state/last-activity"
last=$(stat -c %Y "$state/last-activity")

busy=0
for pidfile in "$workdir"/runs/*/pid; do
  [ -e "$pidfile" ] || continue
  rundir=$(dirname "$pidfile")
  [ -e "$rundir/exit" ] && continue
  pid=$(cat "$pidfile")
  if ps -e -o pgid=,stat= | awk -v g="$pid" '$1 == g && $2 !~ /^Z/ { f = 1 } END { exit !f }'; then
    busy=1
  fi
done
[ "$busy" = 1 ] && { touch "$state/last-activity"; last=$now; }

down() {
  printf '%s dvc-exec-watchdog: %s; shutting down\n' "$(date -u +%FT%TZ)" "$1" | tee -a "$state/watchdog.log"
  "${shutdown_cmd[@]}"
  exit 0
}
if [ $((now - created)) -ge "$max" ]; then
  down "the machine has run for $((now - created))s, past max_runtime (${max}s)"
fi
if [ "$busy" = 0 ] && [ $((now - last)) -ge "$idle" ]; then
  down "no run for $((now - last))s, past idle_timeout (${idle}s)"
fi
exit 0
