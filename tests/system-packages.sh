#!/usr/bin/env sh
# The Debian packages the test suite drives, each installed only when missing, so reruns cost nothing:
# - redis-server: the Redis store's tests start one themselves on a free loopback port;
# - chromium: the chat page's browser tests drive it (Playwright's own browser download cannot be reached);
# - shellcheck: tests/test_pi_smoke.py checks deploy/pi-smoke.sh with it.
# Called by `make test` (and so by .ci/run); uses sudo when not root.
set -eu
missing=""
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
[ -x /usr/bin/chromium ] || missing="$missing chromium"
command -v shellcheck >/dev/null 2>&1 || missing="$missing shellcheck"
[ -z "$missing" ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    echo "The tests need:$missing (no apt-get here: install them with your system's package manager)." >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
echo "Installing$missing with apt-get${sudo:+ (through sudo)}: the tests start a real Redis, drive a real browser and check a shell script." >&2
export DEBIAN_FRONTEND=noninteractive
$sudo env DEBIAN_FRONTEND=noninteractive apt-get -qq -o DPkg::Lock::Timeout=300 update >/dev/null
for package in $missing; do
    if [ "$package" = chromium ]; then
        # With its recommended fonts, so the screenshots show text as a person would see it.
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get -qq -o DPkg::Lock::Timeout=300 install -y chromium >/dev/null
    else
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get -qq -o DPkg::Lock::Timeout=300 install -y \
            --no-install-recommends "$package" >/dev/null
    fi
done
