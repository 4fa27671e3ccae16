"""deploy/pi-smoke.sh (`make pi-smoke`): its make target, arguments and settings; the run itself is in docs/pi.md."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "deploy" / "pi-smoke.sh"


def run_script(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The script with `args`, the environment's PI_SMOKE_* replaced by `env`; it must not get past its checks."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith("PI_SMOKE_")}
    return subprocess.run(
        ["bash", str(SCRIPT), *args], env=clean | env, capture_output=True, text=True, timeout=30, check=False
    )


@pytest.mark.parametrize(
    ("make_args", "arch"),
    [pytest.param([], "all", id="default"), pytest.param(["ARCH=armhf"], "armhf", id="armhf")],
)
def test_make_pi_smoke_runs_the_script_niced_for_the_chosen_architecture(make_args: list[str], arch: str) -> None:
    planned = subprocess.run(
        ["make", "-n", "pi-smoke", *make_args], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True
    ).stdout
    assert f"nice -n 10 bash deploy/pi-smoke.sh {arch}\n" in planned


@pytest.mark.parametrize(
    ("args", "arches"),
    [
        pytest.param([], ["arm64", "armhf"], id="default-both"),
        pytest.param(["all"], ["arm64", "armhf"], id="all"),
        pytest.param(["arm64"], ["arm64"], id="arm64"),
        pytest.param(["armhf"], ["armhf"], id="armhf"),
    ],
)
def test_plan_names_one_cached_root_per_architecture_arm64_first(
    tmp_path: Path, args: list[str], arches: list[str]
) -> None:
    done = run_script("--plan", *args, PI_SMOKE_CACHE=str(tmp_path), PI_SMOKE_BUILD_TIMEOUT="60")
    assert done.returncode == 0, done.stderr
    roots = [line.split()[2] for line in done.stdout.splitlines() if " root " in line]
    assert roots == [str(tmp_path / arch) for arch in arches]
    assert "at most 60s each" in done.stdout
    assert list(tmp_path.iterdir()) == []  # a plan touches nothing


def test_plan_defaults_to_a_cache_outside_the_repository() -> None:
    done = run_script("--plan", "arm64")
    assert done.returncode == 0, done.stderr
    assert "root /var/cache/piagent-pi-smoke/arm64 " in done.stdout


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        pytest.param(["arm32"], {}, "unknown architecture 'arm32' (all, arm64 or armhf)", id="unknown-arch"),
        pytest.param(["--plan"], {"PI_SMOKE_BUILD_TIMEOUT": "1h"}, "are whole seconds", id="build-timeout"),
        pytest.param(["--plan"], {"PI_SMOKE_START_TIMEOUT": "-5"}, "are whole seconds", id="start-timeout"),
    ],
)
def test_bad_usage_exits_2_saying_why(args: list[str], env: dict[str, str], message: str) -> None:
    done = run_script(*args, **env)
    assert done.returncode == 2
    assert message in done.stderr
    assert done.stdout == ""


def test_help_shows_the_usage_lines() -> None:
    done = run_script("--help")
    assert done.returncode == 0
    assert done.stdout.splitlines() == [
        "deploy/pi-smoke.sh [all|arm64|armhf]     all (the default): arm64, then armhf",
        "deploy/pi-smoke.sh --plan [...]          print the roots and settings it would use, do nothing",
    ]


def test_the_script_is_shellcheck_clean() -> None:
    # tests/system-packages.sh installs shellcheck for `make test`.
    shellcheck = shutil.which("shellcheck")
    assert shellcheck is not None, "shellcheck is missing: make system-packages"
    done = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout
