# Sourced by scripts/test and scripts/lab: make .venv (once) and install flowbook into it.
# Usage: ensure_venv EXTRAS   (e.g. "dev" or "lab")
ensure_venv() {
  local extras=$1
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
  fi
  export PIP_DISABLE_PIP_VERSION_CHECK=1
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[$extras]"
}
