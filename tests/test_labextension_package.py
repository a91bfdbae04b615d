"""The JupyterLab extension ships inside flowbook's own wheel.

`pip install flowbook` (and the editable install of scripts/test) builds `labextension/`
and puts the prebuilt extension and the server extension's switch into the environment.
These tests check that in the venv that runs them, that the npm and Python versions agree,
and run the TypeScript helpers' unit tests (Node's test runner on the compiled `lib/`).
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from jupyter_core.paths import jupyter_config_path, jupyter_path

import flowbook

ROOT = Path(__file__).resolve().parents[1]
LABEXTENSION = ROOT / "labextension"
PREFIX = Path(sys.prefix)
INSTALLED = PREFIX / "share" / "jupyter" / "labextensions" / "flowbook-labextension"
SERVER_CONFIG = PREFIX / "etc" / "jupyter" / "jupyter_server_config.d" / "flowbook.json"


def _package() -> dict:
    return json.loads((LABEXTENSION / "package.json").read_text(encoding="utf-8"))


def test_npm_package_version_is_the_python_version() -> None:
    package = _package()
    assert package["name"] == "flowbook-labextension"
    assert package["version"] == flowbook.__version__
    assert package["jupyterlab"]["outputDir"] == "../flowbook/labextension"


def test_venv_has_the_prebuilt_extension() -> None:
    assert INSTALLED.parent in {Path(p) for p in jupyter_path("labextensions")}
    built = json.loads((INSTALLED / "package.json").read_text(encoding="utf-8"))
    assert built["name"] == "flowbook-labextension"
    assert built["version"] == flowbook.__version__
    entry = built["jupyterlab"]["_build"]["load"]
    assert re.fullmatch(r"static/remoteEntry\.[0-9a-f]+\.js", entry), entry
    assert (INSTALLED / entry).is_file()
    assert (INSTALLED / "static" / "style.js").is_file()
    install = json.loads((INSTALLED / "install.json").read_text(encoding="utf-8"))
    assert install["packageName"] == "flowbook"


def test_venv_enables_the_server_extension() -> None:
    assert SERVER_CONFIG.parent.parent in {Path(p) for p in jupyter_config_path()}
    config = json.loads(SERVER_CONFIG.read_text(encoding="utf-8"))
    assert config == {"ServerApp": {"jpserver_extensions": {"flowbook.jupyter.server": True}}}


def _jupyter(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "jupyter", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)  # no colours


def test_jupyter_lists_both_extensions_as_enabled() -> None:
    labextensions = _jupyter("labextension", "list")
    assert re.search(
        rf"flowbook-labextension v{re.escape(flowbook.__version__)} enabled OK", labextensions
    ), labextensions
    server = _jupyter("server", "extension", "list")
    assert re.search(r"flowbook\.jupyter\.server enabled", server), server
    assert re.search(r"flowbook\.jupyter\.server\b.*\n.*OK", server), server


def test_typescript_unit_tests_pass() -> None:
    # the install that set up this venv built the extension with Node: both must be there
    node = shutil.which("node")
    assert node is not None, "node is not on PATH (the extension's build needs Node >= 20)"
    tests = LABEXTENSION / "lib" / "__tests__"
    assert tests.is_dir(), "labextension/lib is not built: run pip install -e . (scripts/test)"
    # the same command as package.json's "test" script, without needing jlpm or the network
    assert _package()["scripts"]["test"] == (
        "node --disable-warning=MODULE_TYPELESS_PACKAGE_JSON --test lib/__tests__/"
    )
    done = subprocess.run(
        [node, "--disable-warning=MODULE_TYPELESS_PACKAGE_JSON", "--test", "lib/__tests__/"],
        cwd=LABEXTENSION,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    passed = re.search(r"^# pass (\d+)$", done.stdout, re.MULTILINE)
    assert passed is not None, done.stdout
    assert int(passed.group(1)) >= 30, done.stdout
    assert re.search(r"^# fail 0$", done.stdout, re.MULTILINE), done.stdout
