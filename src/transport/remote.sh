# dvc-exec's helper on the executor. It is sent with every call as `bash -c SCRIPT`, so nothing
# is installed and client and helper always match. Each subcommand is one round trip.
# Arguments arrive as separate, quoted words: nothing here passes them through `eval`.
#
# Layout under WORKDIR (default ~/.dvc-exec):
#   cache/                      the DVC cache shared by every run on this host
#   projects/PROJECT/repo.git   a bare repository per project: history crosses the wire once
#   runs/RUN/                   one run: wt/ (work tree), log, pid, exit, args, env, setup.sh
set -u
umask 077

die() { printf 'dvc-exec-remote: %s\n' "$*" >&2; exit 97; }

expand_workdir() {
  case "$1" in
    "~") printf '%s' "$HOME" ;;
    "~/"*) printf '%s/%s' "$HOME" "${1#\~/}" ;;
    /*) printf '%s' "$1" ;;
    *) printf '%s/%s' "$HOME" "$1" ;;
  esac
}

# The DVC command may be several words ("python -m dvc"): split it on blanks, without eval.
dvc_cmd() { read -r -a DVC <<<"$1"; }

cmd_prepare() {
  # prepare WORKDIR PROJECT DVCCMD SETUP_SCRIPT_TEXT
  local workdir project setup
  workdir=$(expand_workdir "$1"); project=$2; dvc_cmd "$3"; setup=$4
  local missing=()
  command -v git >/dev/null 2>&1 || missing+=(git)
  command -v rsync >/dev/null 2>&1 || missing+=(rsync)
  command -v setsid >/dev/null 2>&1 || missing+=(setsid)
  mkdir -p "$workdir/cache" "$workdir/projects/$project" "$workdir/runs" "$workdir/state" || die "cannot create $workdir"
  touch "$workdir/state/last-activity"
  # A machine dvc-exec bootstrapped says where its DVC is.
  # shellcheck disable=SC1091
  [ -f "$workdir/env.sh" ] && . "$workdir/env.sh"
  if [ ! -d "$workdir/projects/$project/repo.git" ]; then
    git init -q --bare "$workdir/projects/$project/repo.git" >/dev/null 2>&1 || missing+=(git-init)
  fi
  # The DVC version, as the run will see it (after the setup script). Starting DVC costs about
  # half a second, so the answer is kept, keyed by the executable and its modification time.
  local dvc_version="" exe key
  exe=$(
    if [ -n "$setup" ]; then
      printf '%s' "$setup" > "$workdir/state/setup.$$"
      # shellcheck disable=SC1090
      . "$workdir/state/setup.$$" >/dev/null 2>&1
      rm -f "$workdir/state/setup.$$"
    fi
    p=$(command -v "${DVC[0]}" 2>/dev/null) && printf '%s|%s|%s' "$p" "$(stat -c %Y "$p" 2>/dev/null)" "$PATH"
  )
  if [ -n "$exe" ]; then
    key=$(printf '%s|%s' "$exe" "${DVC[*]}" | cksum | cut -d' ' -f1)
    if [ -s "$workdir/state/dvc-version.$key" ]; then
      dvc_version=$(cat "$workdir/state/dvc-version.$key")
    else
      dvc_version=$(
        if [ -n "$setup" ]; then
          printf '%s' "$setup" > "$workdir/state/setup.$$"
          # shellcheck disable=SC1090
          . "$workdir/state/setup.$$" >/dev/null 2>&1
          rm -f "$workdir/state/setup.$$"
        fi
        "${DVC[@]}" --version 2>/dev/null | tail -n 1
      )
      [ -n "$dvc_version" ] && printf '%s' "$dvc_version" > "$workdir/state/dvc-version.$key"
    fi
  fi
  printf 'workdir=%s\n' "$workdir"
  printf 'dvc_version=%s\n' "$dvc_version"
  printf 'missing=%s\n' "${missing[*]:-}"
  printf 'free_kb=%s\n' "$(df -Pk "$workdir" 2>/dev/null | awk 'NR==2 {print $4}')"
}

# Whether any process of group $1 is alive (zombies do not count: an orphan may wait a while
# for init to reap it).
group_alive() {
  ps -e -o pgid=,stat= 2>/dev/null | awk -v g="$1" '$1 == g && $2 !~ /^Z/ { found = 1 } END { exit !found }'
}

cmd_start() {
  # start WORKDIR PROJECT RUN BASE SNAPSHOT CACHEDIR DATAMODE DVCCMD SETUP_SCRIPT_TEXT GITNAME
  #       GITEMAIL MODE SUBDIR N_ENV ENV... -- DVC_ARGS...
  local workdir project run base snap cachedir datamode dvccmd setup gitname gitemail mode subdir nenv
  workdir=$(expand_workdir "$1"); project=$2; run=$3; base=$4; snap=$5; cachedir=$6; datamode=$7
  dvccmd=$8; setup=$9; gitname=${10}; gitemail=${11}; mode=${12}; subdir=${13}; nenv=${14}
  shift 14
  case "$run" in ""|*/*|.*) die "bad run id" ;; esac
  local rundir="$workdir/runs/$run"
  [ -e "$rundir/wt" ] && die "run $run already exists on this host"
  mkdir -p "$rundir" || die "cannot create $rundir"
  : > "$rundir/env"
  local i
  for ((i = 0; i < nenv; i++)); do printf '%s\0' "$1" >> "$rundir/env"; shift; done
  [ "${1:-}" = "--" ] && shift
  printf '%s\0' "$@" > "$rundir/args"
  [ "$#" -eq 0 ] && : > "$rundir/args"
  printf '%s' "$setup" > "$rundir/setup.sh"
  printf '%s\0' "$dvccmd" "$datamode" "$cachedir" "$gitname" "$gitemail" "$mode" "$snap" "$subdir" > "$rundir/settings"
  {
    git clone -q --shared --no-checkout "$workdir/projects/$project/repo.git" "$rundir/wt" &&
    git -C "$rundir/wt" -c advice.detachedHead=false checkout -q --detach "$snap" &&
    git -C "$rundir/wt" reset -q "$base"
  } > "$rundir/prepare.log" 2>&1 || { cat "$rundir/prepare.log" >&2; die "cannot set up the work tree in $rundir/wt"; }
  if [ -n "$cachedir" ]; then
    mkdir -p "$cachedir"
    # Links, not copies, into the run's fresh work tree: a run starts in time independent of
    # the size of its data (DVC protects linked files from being changed in place).
    printf '[cache]\n    dir = %s\n    type = reflink,hardlink,copy\n' "$cachedir" >> "$rundir/wt/${subdir:+$subdir/}.dvc/config.local"
  fi
  # The job runs in a session of its own: it survives the connection, and its process group
  # is what cancel signals.
  # (setsid -f from the foreground: a job started with & would have SIGINT ignored for good.)
  setsid -f bash -c "$(declare -f job); job \"\$1\"" dvc-exec-job "$rundir" </dev/null >"$rundir/log" 2>&1
  local waited=0
  while [ ! -s "$rundir/pid" ] && [ "$waited" -lt 100 ]; do sleep 0.05; waited=$((waited + 1)); done
  [ -s "$rundir/pid" ] || die "the run did not start; see $rundir/log"
  printf 'pid=%s\n' "$(cat "$rundir/pid")"
  printf 'rundir=%s\n' "$rundir"
}

# The detached job: runs in a session of its own, writes its exit code to RUNDIR/exit.
job() {
  local rundir=$1
  echo $$ > "$rundir/pid.tmp" && mv "$rundir/pid.tmp" "$rundir/pid"
  interrupted=0
  trap "interrupted=1" INT TERM
  finish() { printf "%s\n" "$1" > "$rundir/exit.tmp"; mv "$rundir/exit.tmp" "$rundir/exit"; exit "$1"; }
  mapfile -d "" settings < "$rundir/settings"
  read -r -a DVC <<<"${settings[0]}"
  datamode=${settings[1]}
  [ -n "${settings[3]}" ] && export GIT_AUTHOR_NAME="${settings[3]}" GIT_COMMITTER_NAME="${settings[3]}"
  [ -n "${settings[4]}" ] && export GIT_AUTHOR_EMAIL="${settings[4]}" GIT_COMMITTER_EMAIL="${settings[4]}"
  mapfile -d "" envs < "$rundir/env"
  for kv in "${envs[@]}"; do export "$kv"; done
  mapfile -d "" args < "$rundir/args"
  mode=${settings[5]}; snap=${settings[6]}; subdir=${settings[7]}
  # shellcheck disable=SC1091
  [ -f "$rundir/../../env.sh" ] && . "$rundir/../../env.sh"
  cd "$rundir/wt/$subdir" || finish 98
  if [ -s "$rundir/setup.sh" ]; then
    # shellcheck disable=SC1091
    . "$rundir/setup.sh" || { echo "dvc-exec: the setup_script failed" >&2; finish 98; }
  fi
  if [ "$datamode" = pull ]; then
    "${DVC[@]}" pull || { echo "dvc-exec: dvc pull failed" >&2; finish 98; }
  fi
  if [ "$datamode" != pull ] && [ "$mode" = repro ]; then
    # dvc exp run checks out its inputs itself; dvc repro does not. Outputs not produced yet
    # have nothing to check out, and the warnings about them are noise.
    "${DVC[@]}" checkout -q --allow-missing 2>"$rundir/checkout.log" || cat "$rundir/checkout.log" >&2
  fi
  [ "$interrupted" = 1 ] && finish 130
  "${DVC[@]}" "${args[@]}"
  rc=$?
  [ "$interrupted" = 1 ] && [ "$rc" = 0 ] && rc=130
  if [ "$rc" = 0 ] && [ "$mode" = repro ]; then
    # Record the work tree as a commit on top of the snapshot, for the client to fetch.
    (
      cd "$rundir/wt" &&
      export GIT_INDEX_FILE="$rundir/result.index" GIT_AUTHOR_NAME=dvc-exec GIT_AUTHOR_EMAIL=dvc-exec@localhost \
        GIT_COMMITTER_NAME=dvc-exec GIT_COMMITTER_EMAIL=dvc-exec@localhost &&
      git read-tree "$snap" && git add -A && tree=$(git write-tree) &&
      commit=$(git commit-tree "$tree" -p "$snap" -m "dvc-exec: repro result") &&
      git update-ref refs/dvc-exec/result "$commit"
    ) || { echo "dvc-exec: cannot record the results" >&2; rc=99; }
  fi
  finish "$rc"
}

cmd_exec_start() {
  # exec-start WORKDIR RUN CWD SETUP_SCRIPT_TEXT N_ENV ENV... -- ARGV...: run ARGV detached in
  # CWD (relative to WORKDIR), with the same log, exit and cancel protocol as a DVC run.
  local workdir run cwd setup nenv rundir i
  workdir=$(expand_workdir "$1"); run=$2; cwd=$3; setup=$4; nenv=$5
  shift 5
  case "$run" in ""|*/*|.*) die "bad run id" ;; esac
  rundir="$workdir/runs/$run"
  mkdir -p "$rundir" "$workdir/$cwd" || die "cannot create $rundir"
  touch "$workdir/state/last-activity" 2>/dev/null
  : > "$rundir/env"
  for ((i = 0; i < nenv; i++)); do printf '%s\0' "$1" >> "$rundir/env"; shift; done
  [ "${1:-}" = "--" ] && shift
  printf '%s\0' "$@" > "$rundir/args"
  printf '%s' "$setup" > "$rundir/setup.sh"
  printf '%s' "$workdir/$cwd" > "$rundir/cwd"
  setsid -f bash -c "$(declare -f plainjob); plainjob \"\$1\"" dvc-exec-job "$rundir" </dev/null >"$rundir/log" 2>&1
  local waited=0
  while [ ! -s "$rundir/pid" ] && [ "$waited" -lt 100 ]; do sleep 0.05; waited=$((waited + 1)); done
  [ -s "$rundir/pid" ] || die "the command did not start; see $rundir/log"
  printf 'pid=%s\n' "$(cat "$rundir/pid")"
}

# A plain command, detached: for `dvc-exec stage`.
plainjob() {
  local rundir=$1
  echo $$ > "$rundir/pid.tmp" && mv "$rundir/pid.tmp" "$rundir/pid"
  interrupted=0
  trap "interrupted=1" INT TERM
  finish() { printf "%s\n" "$1" > "$rundir/exit.tmp"; mv "$rundir/exit.tmp" "$rundir/exit"; exit "$1"; }
  mapfile -d "" envs < "$rundir/env"
  for kv in "${envs[@]}"; do export "$kv"; done
  mapfile -d "" args < "$rundir/args"
  # shellcheck disable=SC1091
  [ -f "$rundir/../../env.sh" ] && . "$rundir/../../env.sh"
  if [ -s "$rundir/setup.sh" ]; then
    # shellcheck disable=SC1091
    . "$rundir/setup.sh" || { echo "dvc-exec: the setup_script failed" >&2; finish 98; }
  fi
  cd "$(cat "$rundir/cwd")" || finish 98
  [ "$interrupted" = 1 ] && finish 130
  "${args[@]}"
  rc=$?
  [ "$interrupted" = 1 ] && [ "$rc" = 0 ] && rc=130
  finish "$rc"
}

cmd_remove_paths() {
  # remove-paths BASE PATH...: create BASE, and remove these paths under it (a stage's outputs
  # before it runs).
  local base p
  base=$(expand_workdir "$1"); shift
  mkdir -p "$base" || die "cannot create $base"
  for p in "$@"; do
    case "$p" in /*|..|../*|*/../*|*/..) die "refusing to remove $p" ;; esac
    rm -rf "${base:?}/$p"
  done
}

cmd_follow() {
  # follow WORKDIR RUN OFFSET: the log from byte OFFSET on, live, until the run ends; then the
  # exit code and the experiment's name on stderr.
  local workdir run pos rundir
  workdir=$(expand_workdir "$1"); run=$2; pos=$3
  rundir="$workdir/runs/$run"
  [ -d "$rundir" ] || die "no run $run on this host (in $workdir/runs)"
  local pid size done=0 ticks=0
  pid=$(cat "$rundir/pid" 2>/dev/null)
  while :; do
    [ -e "$rundir/exit" ] && done=1
    size=$(stat -c %s "$rundir/log" 2>/dev/null || echo 0)
    if [ "$size" -gt "$pos" ]; then
      tail -c "+$((pos + 1))" "$rundir/log" | head -c "$((size - pos))"
      pos=$size
    fi
    [ "$done" = 1 ] && break
    ticks=$((ticks + 1))
    if [ $((ticks % 20)) = 0 ]; then
      touch "$workdir/state/last-activity" 2>/dev/null
      if ! group_alive "$pid" && [ ! -e "$rundir/exit" ]; then break; fi
    fi
    sleep 0.05
  done
  report "$rundir"
}

report() {
  local rundir=$1 code name=""
  if [ -e "$rundir/exit" ]; then code=$(cat "$rundir/exit"); else code=lost; fi
  local info
  while IFS= read -r -d '' info; do
    name=$(sed -n 's/.*"name": *"\([^"]*\)".*/\1/p' "$info")
  done < <(find "$rundir/wt" -maxdepth 10 -path '*/.dvc/tmp/exps/run/*/*.run' -print0 2>/dev/null)
  printf 'DVC-EXEC-EXIT %s\n' "$code" >&2
  printf 'DVC-EXEC-NAME %s\n' "$name" >&2
  printf 'DVC-EXEC-FREE-KB %s\n' "$(df -Pk "$rundir" 2>/dev/null | awk 'NR==2 {print $4}')" >&2
}

cmd_status() {
  # status WORKDIR RUN
  local workdir run rundir
  workdir=$(expand_workdir "$1"); run=$2
  rundir="$workdir/runs/$run"
  [ -d "$rundir" ] || die "no run $run on this host (in $workdir/runs)"
  local pid state
  pid=$(cat "$rundir/pid" 2>/dev/null)
  if [ -e "$rundir/exit" ]; then state=finished
  elif [ -n "$pid" ] && group_alive "$pid"; then state=running
  else state=lost; fi
  printf 'state=%s\n' "$state"
  printf 'log_size=%s\n' "$(stat -c %s "$rundir/log" 2>/dev/null || echo 0)"
  report "$rundir" 2>&1
}

cmd_cancel() {
  # cancel WORKDIR RUN GRACE_SECONDS: SIGINT to the run's process group, SIGKILL after the grace.
  local workdir run grace rundir pid
  workdir=$(expand_workdir "$1"); run=$2; grace=$3
  rundir="$workdir/runs/$run"
  pid=$(cat "$rundir/pid" 2>/dev/null) || { echo "state=gone"; return 0; }
  if ! group_alive "$pid"; then echo "state=gone"; return 0; fi
  kill -INT -- "-$pid" 2>/dev/null
  local waited=0
  while group_alive "$pid" && [ "$waited" -lt $((grace * 10)) ]; do
    sleep 0.1; waited=$((waited + 1))
  done
  if group_alive "$pid"; then
    kill -KILL -- "-$pid" 2>/dev/null
    sleep 0.2
    echo "state=killed"
  else
    echo "state=stopped"
  fi
  [ -e "$rundir/exit" ] || { printf '130\n' > "$rundir/exit"; }
}

cmd_cat_log() {
  # cat-log WORKDIR RUN: the log so far.
  local workdir
  workdir=$(expand_workdir "$1")
  [ -f "$workdir/runs/$2/log" ] || die "no run $2 on this host"
  cat "$workdir/runs/$2/log"
}

cmd_cleanup() {
  # cleanup WORKDIR RUN: remove the run's directory.
  local workdir run
  workdir=$(expand_workdir "$1"); run=$2
  case "$run" in ""|*/*|.*) die "bad run id" ;; esac
  rm -rf "${workdir:?}/runs/$run"
  # The run's snapshot ref is no longer needed (its base stays: history crosses the wire once).
  local r
  for r in "$workdir"/projects/*/repo.git; do
    [ -d "$r" ] && git -C "$r" update-ref -d "refs/dvc-exec/snap/$run" 2>/dev/null
  done
  return 0
}

cmd_bootstrap_status() {
  # bootstrap-status WORKDIR: done, failed (with the log's tail) or running (with its last line).
  local workdir
  workdir=$(expand_workdir "$1")
  if [ -e "$workdir/bootstrap.done" ]; then echo "state=done"
  elif [ -e "$workdir/bootstrap.failed" ]; then
    echo "state=failed"
    tail -n 20 "$workdir/bootstrap.log" 2>/dev/null | sed 's/^/  /'
  else
    echo "state=running"
    printf 'last=%s\n' "$(tail -n 1 "$workdir/bootstrap.log" 2>/dev/null | tr -d '\r' | cut -c1-200)"
  fi
}

sub=${1:-}; shift || true
case "$sub" in
  prepare) cmd_prepare "$@" ;;
  start) cmd_start "$@" ;;
  follow) cmd_follow "$@" ;;
  status) cmd_status "$@" ;;
  cancel) cmd_cancel "$@" ;;
  cleanup) cmd_cleanup "$@" ;;
  bootstrap-status) cmd_bootstrap_status "$@" ;;
  exec-start) cmd_exec_start "$@" ;;
  cat-log) cmd_cat_log "$@" ;;
  remove-paths) cmd_remove_paths "$@" ;;
  *) die "unknown subcommand '$sub'" ;;
esac
