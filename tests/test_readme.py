"""The README's usage example runs as written (in a fresh process, in a scratch folder)."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_usage_example_runs(tmp_path):
    readme = (ROOT / "README.md").read_text()
    usage = readme[readme.index("## Usage") :]
    code = re.search(r"```python\n(.*?)```", usage, re.S).group(1)
    script = tmp_path / "usage.py"
    script.write_text(code)
    completed = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
        stdin=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "torch.Size([2, 10]) torch.Size([2, 256])" in completed.stdout
    assert (tmp_path / "my-mmfnet" / "model.safetensors").is_file()
