"""The built wheel is the product: installed into a fresh venv, its demo runs and answers."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def test_the_wheel_installs_into_a_fresh_venv_and_its_demo_answers(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels),
                    str(ROOT)], check=True, timeout=900)
    [wheel] = wheels.glob("endosec-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    assert {"endosec/demo/endosec.yaml", "endosec/demo/executors/notes.js",
            "endosec/observe/dashboard/index.html"} <= names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"{wheel}[demo]"], check=True,
                   timeout=900)
    # Run from elsewhere, with nothing of the source tree on the path.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.Popen(
        [str(venv / "bin" / "endosec"), "demo", "--listen", "127.0.0.1:0", "--admin",
         "127.0.0.1:0", "--state-dir", str(tmp_path / "state")],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.match(r"endosec demo: serving http://127\.0\.0\.1:(\d+) ", line)
        assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
        conn = http.client.HTTPConnection("127.0.0.1", int(match.group(1)), timeout=10)
        conn.request("POST", "/notes", body=json.dumps({"text": "from the wheel"}))
        created = conn.getresponse()
        assert created.status == 201, created.read()
        created.read()
        conn.request("GET", "/notes/1")
        reply = conn.getresponse()
        assert reply.status == 200 and json.loads(reply.read())["text"] == "from the wheel"
        conn.close()
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert proc.returncode == 0
