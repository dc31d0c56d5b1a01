# Shared by the scripts in .ci/: strict mode, the repository root, a timed step helper, PATH.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$ROOT/tests/node_modules/.bin:$PATH"
SECONDS=0

# step NAME COMMAND...: runs COMMAND, then prints how long it took.
step() {
  local name=$1 start=$SECONDS
  shift
  echo "==> $name"
  "$@"
  echo "==> $name: $((SECONDS - start)) s (total $((SECONDS / 60)) min $((SECONDS % 60)) s)"
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}
