"""The committed generated code must match protos/ (regenerate with
scripts/gen_protos.py)."""
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_generated_code_is_current():
    pytest.importorskip("grpc_tools", reason="grpcio-tools (the dev extra) not installed")
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_protos.py"),
                             "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
