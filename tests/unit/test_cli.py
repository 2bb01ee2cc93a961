import subprocess
import sys


def test_help_runs_without_root_or_bcc():
    out = subprocess.run(
        [sys.executable, "-m", "spagate", "--help"], capture_output=True, text=True, check=True
    )
    assert "keygen" in out.stdout
