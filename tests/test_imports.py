"""What importing piagent loads: nothing of httpx's command-line tool, whatever else is installed."""

from __future__ import annotations

import subprocess
import sys


def test_importing_piagent_loads_no_cli_of_httpx() -> None:
    # rich and pygments are installed here (test tools need them), so httpx would import them for its CLI.
    code = (
        "import sys, importlib.util\n"
        "assert importlib.util.find_spec('rich') is not None and importlib.util.find_spec('pygments') is not None\n"
        "import piagent, piagent.cli, httpx\n"
        "print(sorted({name.split('.')[0] for name in sys.modules} & {'rich', 'pygments'}), httpx.Client.__name__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.split() == ["[]", "Client"]
