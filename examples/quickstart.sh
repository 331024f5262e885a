#!/usr/bin/env bash
# The quickstart: a DVC project, the `local` executor, one experiment run through dvc-exec.
# Installs DVC into ~/.cache/dvc-exec/venv if it is not on PATH.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
command -v dvc-exec >/dev/null || { echo "dvc-exec is not on PATH (cargo install --path . puts it in ~/.cargo/bin)" >&2; exit 1; }
if ! command -v dvc >/dev/null; then
  venv=$HOME/.cache/dvc-exec/venv
  if [ ! -x "$venv/bin/dvc" ]; then
    echo "==> installing DVC into $venv"
    python3 -m venv "$venv" && "$venv/bin/pip" install -q dvc pyyaml
  fi
  export PATH="$venv/bin:$PATH"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/dvc-exec-quickstart.XXXXXX")
echo "==> a DVC project in $work"
cp -r "$here/project/." "$work/"
cd "$work"
git init -q
git config user.name >/dev/null || git config user.name "quickstart"
git config user.email >/dev/null || git config user.email "quickstart@example.com"
dvc init -q
mkdir -p data && mv points.csv data/points.csv
dvc add -q data/points.csv
git add -A && git commit -qm "quickstart project"

echo "==> dvc-exec executor add -d here local"
dvc-exec executor add -d here local
git add .dvc/exec.config && git commit -qm "add the local executor"

echo "==> dvc-exec exp run -S train.lr=0.02"
dvc-exec exp run -S train.lr=0.02

echo "==> dvc exp show"
dvc exp show --no-pager
echo "The project is in $work; try: cd $work && dvc-exec exp run -S train.epochs=400"
