# Sourced by scripts/test and scripts/lab: make .venv (once) and install flowbook into it.
# Usage: ensure_venv EXTRAS   (e.g. "dev" or "lab")
#
# The install also builds the JupyterLab extension (labextension/, needs Node >= 20 on PATH)
# into the venv's share/jupyter/labextensions/; once built, it is rebuilt only when a file
# under labextension/ changed. jlpm and jupyter-builder shell out to other tools by name, so
# the venv's bin goes first on PATH.
ensure_venv() {
  local extras=$1
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
  fi
  export PATH="$PWD/.venv/bin:$PATH"
  export PIP_DISABLE_PIP_VERSION_CHECK=1
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[$extras]"
}
