#!/usr/bin/env bash
# `make pi-smoke`: piagent on a Raspberry Pi's architecture, without a Pi. Into a Debian bookworm root of that
# architecture (Raspberry Pi OS is bookworm) run by qemu user emulation, it installs piagent from wheels only,
# starts it on 127.0.0.1 and chats through it (plain and streamed) against bench/fake_model.py on the host,
# then prints what installed, from which wheel, and the times. Figures are under emulation: slower than a Pi.
#
#   deploy/pi-smoke.sh [all|arm64|armhf]     all (the default): arm64, then armhf
#   deploy/pi-smoke.sh --plan [...]          print the roots and settings it would use, do nothing
#
# arm64 must install from wheels only, with no compiler in its root. armhf (32-bit) has no wheel on PyPI for
# some compiled packages: that is a finding, printed, not a failure; the script then builds them from source
# (timed, under PI_SMOKE_BUILD_TIMEOUT) and goes on without an optional one that fails to build.
# Exit status: 0 when piagent answered on every architecture it could be installed on, 1 when a smoke failed
# (arm64 not installable from wheels included), 2 on bad usage.
#
# Environment: PI_SMOKE_CACHE (the roots, kept between runs, outside the repo; default
# /var/cache/piagent-pi-smoke), PI_SMOKE_MIRROR (Debian mirror), PI_SMOKE_BUILD_TIMEOUT (seconds per source build,
# default 3600), PI_SMOKE_START_TIMEOUT (seconds to the first /health 200, default 180), PYTHON (the host Python
# that runs the fake model server and builds piagent's wheel; default .venv/bin/python).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${PI_SMOKE_CACHE:-/var/cache/piagent-pi-smoke}
MIRROR=${PI_SMOKE_MIRROR:-http://deb.debian.org/debian}
BUILD_TIMEOUT=${PI_SMOKE_BUILD_TIMEOUT:-3600}
START_TIMEOUT=${PI_SMOKE_START_TIMEOUT:-180}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
SUITE=bookworm
WORK=/opt/pi-smoke # inside the root
MARK=.piagent-pi-smoke-root

usage() {
    sed -n '7,8s/^# *//p' "$0"
}

plan=0
arches=()
for arg in "$@"; do
    case $arg in
        --plan) plan=1 ;;
        -h | --help) usage; exit 0 ;;
        all | "") arches+=(arm64 armhf) ;;
        arm64 | armhf) arches+=("$arg") ;;
        *) echo "pi-smoke: unknown architecture '$arg' (all, arm64 or armhf)" >&2; usage >&2; exit 2 ;;
    esac
done
[ ${#arches[@]} -gt 0 ] || arches=(arm64 armhf)
for number in "$BUILD_TIMEOUT" "$START_TIMEOUT"; do
    case $number in
        '' | *[!0-9]*) echo "pi-smoke: PI_SMOKE_BUILD_TIMEOUT and PI_SMOKE_START_TIMEOUT are whole seconds" >&2; exit 2 ;;
    esac
done

qemu_of() { case $1 in arm64) echo aarch64 ;; armhf) echo arm ;; esac; }

if [ "$plan" = 1 ]; then
    for arch in "${arches[@]}"; do
        echo "$arch: root $CACHE/$arch (qemu-$(qemu_of "$arch"), Debian $SUITE from $MIRROR)"
    done
    echo "source builds: at most ${BUILD_TIMEOUT}s each; start-up: at most ${START_TIMEOUT}s; host python: $PYTHON"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "pi-smoke: needs root (debootstrap, mount, chroot): sudo make pi-smoke" >&2
    exit 2
fi
[ -x "$PYTHON" ] || { echo "pi-smoke: no $PYTHON (make .venv/.runtime first, or set PYTHON)" >&2; exit 2; }

tmp=$(mktemp -d)
mounts=()
pids=()
cleanup() {
    local pid mount index
    for pid in "${pids[@]}"; do
        if kill "$pid" 2>/dev/null; then
            wait "$pid" 2>/dev/null || true
        fi
    done
    for ((index = ${#mounts[@]} - 1; index >= 0; index--)); do
        mount=${mounts[index]}
        umount "$mount" 2>/dev/null || umount -l "$mount" || echo "pi-smoke: could not unmount $mount" >&2
    done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '%s\n' "$*"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

host_tools() {
    local missing=""
    command -v debootstrap >/dev/null || missing="$missing debootstrap"
    command -v qemu-aarch64-static >/dev/null || missing="$missing qemu-user-static"
    [ -z "$missing" ] && return
    say "Installing$missing with apt-get: the roots are made by debootstrap and run by qemu user emulation."
    DEBIAN_FRONTEND=noninteractive apt-get -qq -o DPkg::Lock::Timeout=300 update >/dev/null
    # shellcheck disable=SC2086 # one word per package
    DEBIAN_FRONTEND=noninteractive apt-get -qq -o DPkg::Lock::Timeout=300 install -y --no-install-recommends \
        $missing >/dev/null
}

# binfmt_misc lets the kernel hand a foreign ELF to qemu; the F flag of Debian's entries opens the interpreter
# at registration, so it works inside the chroot without a copy of qemu there.
binfmt() {
    local name=qemu-$1 dir=/proc/sys/fs/binfmt_misc
    [ -e "$dir/register" ] || mount -t binfmt_misc binfmt_misc "$dir"
    if [ ! -e "$dir/$name" ]; then
        grep -v '^#' "/usr/lib/binfmt.d/$name.conf" >"$dir/register"
    fi
    [ "$(head -n1 "$dir/$name")" = enabled ] || echo 1 >"$dir/$name"
}

make_root() {
    local arch=$1 root=$CACHE/$1 include=python3,python3-venv
    [ -e "$root/$MARK" ] && return
    # armhf gets a compiler for the packages PyPI has no armv7 wheel of; arm64's root has none, so its
    # install proves that nothing there is built.
    [ "$arch" = armhf ] && include=$include,python3-dev,gcc,libc6-dev,make,autoconf,automake,libtool
    say "Making the $arch root in $root (debootstrap --variant=minbase, once: about 6 minutes)"
    rm -rf "$root.partial"
    mkdir -p "$CACHE"
    local start
    start=$(now)
    debootstrap --variant=minbase --arch="$arch" --include="$include" "$SUITE" "$root.partial" "$MIRROR" \
        >"$CACHE/$arch.debootstrap.log" 2>&1 || {
        tail -n 20 "$CACHE/$arch.debootstrap.log" >&2
        return 1
    }
    touch "$root.partial/$MARK"
    mv "$root.partial" "$root"
    say "root made in $(since "$start") s"
}

mount_root() {
    local root=$1
    mountpoint -q "$root/proc" || { mount -t proc proc "$root/proc" && mounts+=("$root/proc"); }
    mountpoint -q "$root/dev" || { mount --bind /dev "$root/dev" && mounts+=("$root/dev"); }
    mountpoint -q "$root/sys" || { mount -o ro --bind /sys "$root/sys" && mounts+=("$root/sys"); }
    # pip reaches PyPI through this machine's resolver and CA bundle.
    cp --remove-destination /etc/resolv.conf "$root/etc/resolv.conf"
    mkdir -p "$root/etc/ssl/certs"
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
}

# A command in the root with a clean environment: none of the host's pip settings (its local wheel folders and
# indexes) leak in, so every wheel comes from PyPI.
ROOT_ENV=(/usr/bin/env -i HOME=/root PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
    PIP_DEFAULT_TIMEOUT=60 PIP_NO_INPUT=1)
in_root() {
    local root=$1
    shift
    chroot "$root" "${ROOT_ENV[@]}" "$@"
}

requirements() {
    grep -v '^[[:space:]]*#' "$REPO/requirements.txt" | grep -v '^[[:space:]]*$'
}

name_of() {
    local requirement=$1
    echo "${requirement%%[=<>!~; ]*}"
}

# The installed distributions with the tag of the wheel each came from (cp311-cp311-linux_armv7l: built here).
installed() {
    local root=$1
    in_root "$root" "$WORK/venv/bin/python" - <<'EOF'
import importlib.metadata as metadata

for dist in sorted(metadata.distributions(), key=lambda d: d.metadata["Name"].lower()):
    wheel = dist.read_text("WHEEL") or ""
    tags = [line.split(":", 1)[1].strip() for line in wheel.splitlines() if line.startswith("Tag:")]
    print(f"  {dist.metadata['Name']}=={dist.version}  [{', '.join(tags) or '?'}]")
EOF
}

start_fake() {
    [ -n "${fake_port:-}" ] && return
    : >"$tmp/fake.log"
    # 64 tokens whatever an agent's num_predict: enough to stream, little to emulate.
    "$PYTHON" "$REPO/bench/fake_model.py" --port 0 --force-tokens 64 >"$tmp/fake.log" 2>&1 &
    pids+=($!)
    local waited=0
    until fake_port=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\).*|\1|p' "$tmp/fake.log") && [ -n "$fake_port" ]
    do
        sleep 0.1
        waited=$((waited + 1))
        [ $waited -lt 300 ] || { cat "$tmp/fake.log" >&2; return 1; }
    done
}

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# One field of a JSON body on stdin, with the host's Python.
field() {
    "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]], end="")' "$1"
}

# Installs piagent into a fresh venv in the root; sets `install_seconds`, `build_seconds`, `missing`, `findings`.
install() {
    local arch=$1 root=$CACHE/$1 requirement name start log=$tmp/$1.pip.log
    rm -rf "${root:?}$WORK"
    mkdir -p "$root$WORK"
    cp "$wheel" "$REPO/requirements.txt" "$root$WORK/"
    cp -r "$REPO/prompts" "$root$WORK/prompts"
    local whl=$WORK/${wheel##*/}
    missing=()
    start=$(now)
    in_root "$root" python3 -m venv "$WORK/venv" || return 1
    say "venv made in $(since "$start") s ($(in_root "$root" "$WORK/venv/bin/python" -V), \
$(in_root "$root" "$WORK/venv/bin/pip" -V | cut -d' ' -f1-2))"

    say "-- pip install --only-binary=:all: -r requirements.txt ${wheel##*/}"
    start=$(now)
    if in_root "$root" "$WORK/venv/bin/pip" install --only-binary=:all: -r "$WORK/requirements.txt" "$whl" \
        >"$log" 2>&1; then
        install_seconds=$(since "$start")
        grep -o '[^ /]*\.whl' "$log" | sort -u | sed 's/^/  downloaded /'
        say "installed from wheels only in $install_seconds s"
        return 0
    fi
    say "wheels only: FAILED after $(since "$start") s: $(grep -m1 -i 'no matching distribution\|error' "$log")"
    # pip names only the first package it finds no wheel for: ask for each pin alone.
    say "-- a wheel on PyPI for each pin of requirements.txt (pip download --only-binary=:all: --no-deps):"
    while IFS= read -r requirement; do
        name=$(name_of "$requirement")
        rm -rf "$root$WORK/probe"
        if in_root "$root" "$WORK/venv/bin/pip" download -q --only-binary=:all: --no-deps -d "$WORK/probe" \
            "$requirement" >"$tmp/probe.log" 2>&1; then
            say "  $name: $(find "$root$WORK/probe" -name '*.whl' -printf '%f\n' | head -n1)"
        else
            say "  $name: NO WHEEL for $arch on PyPI"
            missing+=("$requirement")
        fi
    done < <(requirements)
    rm -rf "$root$WORK/probe"
    if [ "$arch" = arm64 ] || [ ${#missing[@]} -eq 0 ]; then
        for requirement in "${missing[@]}"; do
            findings+=("$(name_of "$requirement"): no $arch wheel on PyPI")
        done
        tail -n 20 "$log" >&2
        return 1
    fi

    # No wheel: what building costs (each from its source release, its build tools from PyPI as wheels).
    local failed=() seconds
    for requirement in "${missing[@]}"; do
        name=$(name_of "$requirement")
        say "-- building $name from source: pip install --no-deps '$requirement'"
        start=$(now)
        if timeout "$BUILD_TIMEOUT" chroot "$root" "${ROOT_ENV[@]}" "$WORK/venv/bin/pip" install --no-deps \
            "$requirement" >"$tmp/build-$name.log" 2>&1; then
            seconds=$(since "$start")
            findings+=("$name: no $arch wheel on PyPI; built from source in $seconds s (under emulation)")
            build_seconds=$(awk -v a="$build_seconds" -v b="$seconds" 'BEGIN { printf "%.1f", a + b }')
        else
            seconds=$(since "$start")
            failed+=("$name")
            findings+=("$name: no $arch wheel on PyPI; building it FAILED after $seconds s: \
$(grep -m1 -i 'error' "$tmp/build-$name.log" || tail -n1 "$tmp/build-$name.log")")
            tail -n 15 "$tmp/build-$name.log" >&2
        fi
        say "  ${findings[-1]}"
    done

    # Without the ones that would not build: msgspec is needed, httptools and uvloop are optional.
    local keep="$tmp/$arch.requirements.txt"
    requirements >"$keep"
    for name in "${failed[@]}"; do
        [ "$name" = msgspec ] && { findings+=("piagent cannot be installed on $arch without a msgspec wheel"); return 2; }
        grep -v "^${name}[=<>!~; ]" "$keep" >"$keep.new" && mv "$keep.new" "$keep"
    done
    cp "$keep" "$root$WORK/requirements-$arch.txt"
    say "-- pip install --only-binary=:all: -r requirements-$arch.txt; --no-deps ${wheel##*/}"
    start=$(now)
    if ! in_root "$root" "$WORK/venv/bin/pip" install --only-binary=:all: -r "$WORK/requirements-$arch.txt" \
        >"$log" 2>&1 || ! in_root "$root" "$WORK/venv/bin/pip" install --no-deps "$whl" >>"$log" 2>&1; then
        tail -n 20 "$log" >&2
        return 1
    fi
    install_seconds=$(since "$start")
    grep -o '[^ /]*\.whl' "$log" | sort -u | sed 's/^/  downloaded /'
    say "installed the rest in $install_seconds s, after $build_seconds s of source builds"
}

# Starts piagent, chats through it, stops it; sets `startup_seconds` and `rss`. The arguments: a label, where it
# runs (said after its figures), its prompts folder, then the command before the settings, `--`, and the program.
smoke() {
    local label=$1 where=$2 prompts=$3 port start body reply streamed sse pid status prefix=()
    shift 3
    while [ "$1" != -- ]; do
        prefix+=("$1")
        shift
    done
    shift
    port=$(free_port)
    start=$(now)
    "${prefix[@]}" HOME=/root PATH=/usr/bin:/bin LANG=C.UTF-8 PIAGENT_HOST=127.0.0.1 PIAGENT_PORT="$port" \
        PIAGENT_OLLAMA_URL="http://127.0.0.1:$fake_port" PIAGENT_PROMPTS_DIR="$prompts" \
        PIAGENT_TOOLS_FILE="$prompts/tools.toml" "$@" >"$tmp/$label.piagent.log" 2>&1 &
    pid=$!
    pids+=("$pid")
    piagent_pid=$pid
    until curl -fs -o /dev/null "http://127.0.0.1:$port/health"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            say "piagent exited before answering /health:"
            cat "$tmp/$label.piagent.log"
            return 1
        fi
        if [ "$(since "$start" | cut -d. -f1)" -ge "$START_TIMEOUT" ]; then
            say "no /health 200 within ${START_TIMEOUT}s"
            cat "$tmp/$label.piagent.log"
            return 1
        fi
        sleep 0.1
    done
    startup_seconds=$(since "$start")
    say "-- started: first /health 200 after $startup_seconds s ($where)"
    say "  $(curl -fsS "http://127.0.0.1:$port/health")"

    local url=http://127.0.0.1:$port json='Content-Type: application/json'
    body=$(curl -fsS "$url/chat" -H "$json" -d '{"message": "Hi from a Pi"}') || return 1
    reply=$(field reply <<<"$body") || return 1
    streamed=$(curl -fsS -N "$url/chat" -H "$json" -d '{"message": "Hi again", "stream": true}') || return 1
    sse=$(curl -fsS -N "$url/v1/chat/completions" -H "$json" \
        -d '{"model": "general", "messages": [{"role": "user", "content": "Hi"}], "stream": true}') || return 1
    say "-- chat: a JSON reply of ${#reply} characters; the same ${#streamed} streamed as text;" \
        "OpenAI SSE: $(grep -c '^data: {' <<<"$sse") chunks and [DONE]"
    [ -n "$reply" ] || { say "empty reply: $body"; return 1; }
    [ "$streamed" = "$reply" ] || { say "the streamed reply differs: '$streamed' against '$reply'"; return 1; }
    grep -q '^data: \[DONE\]' <<<"$sse" || { say "no [DONE] in the OpenAI stream: $sse"; return 1; }
    sleep 2
    # Under emulation the process is qemu running piagent: its RSS holds the emulator and its translated code too.
    rss=$(awk '/^VmRSS/ { printf "%.1f MiB", $2 / 1024 }' "/proc/$pid/status")
    say "-- idle RSS after the chats: $rss ($where)"
    start=$(now)
    kill -TERM "$pid"
    status=0
    wait "$pid" || status=$?
    # uvicorn re-raises the SIGTERM it handled once shut down, so 143 (128 + 15) is a clean stop too.
    say "-- stopped by SIGTERM in $(since "$start") s, exit status $status," \
        "$(grep -c 'Application shutdown complete' "$tmp/$label.piagent.log") clean shutdown"
    if [ "$status" -ne 0 ] && [ "$status" -ne 143 ]; then
        cat "$tmp/$label.piagent.log"
        return 1
    fi
}

host_tools
"$PYTHON" -m pip wheel -q --no-deps --no-build-isolation -w "$tmp/dist" "$REPO" >/dev/null 2>&1 ||
    "$PYTHON" -m pip wheel -q --no-deps -w "$tmp/dist" "$REPO" >/dev/null
wheel=$(find "$tmp/dist" -name 'piagent-*.whl' | head -n1)
summary=()
failures=0
for arch in "${arches[@]}"; do
    say "===== $arch: Debian $SUITE under qemu-$(qemu_of "$arch") ($(date -u '+%Y-%m-%d %H:%M UTC'))"
    binfmt "$(qemu_of "$arch")"
    make_root "$arch"
    mount_root "$CACHE/$arch"
    say "root: $CACHE/$arch, $(in_root "$CACHE/$arch" dpkg --print-architecture), \
uname -m $(in_root "$CACHE/$arch" uname -m), $(in_root "$CACHE/$arch" python3 -V)"
    findings=()
    install_seconds="" build_seconds=0 startup_seconds="" rss="" piagent_pid=""
    result=0
    install "$arch" || result=$?
    if [ "$result" -eq 0 ]; then
        say "-- installed:"
        installed "$CACHE/$arch"
        start_fake
        smoke "$arch" "under qemu-$(qemu_of "$arch") emulation: qemu's process, piagent with the emulator" \
            "$WORK/prompts" chroot "$CACHE/$arch" /usr/bin/env -i -- "$WORK/venv/bin/piagent" || result=1
    fi
    case $result in
        0)
            verdict="PASS: install $install_seconds s"
            [ "$build_seconds" = 0 ] || verdict="$verdict (after $build_seconds s of source builds)"
            verdict="$verdict, first /health 200 after $startup_seconds s, idle RSS $rss"
            ;;
        2) verdict="NOT INSTALLABLE from PyPI (a finding, not a failure)" ;;
        *) verdict="FAIL"; failures=$((failures + 1)) ;;
    esac
    summary+=("$arch: $verdict")
    for finding in "${findings[@]}"; do
        summary+=("  finding: $finding")
    done
    # This root is left unmounted, piagent stopped, before the next; the trap covers a failure on the way.
    if [ -n "$piagent_pid" ] && kill "$piagent_pid" 2>/dev/null; then
        wait "$piagent_pid" || true
    fi
    cleanup_mounts=("${mounts[@]}")
    for ((index = ${#cleanup_mounts[@]} - 1; index >= 0; index--)); do
        umount "${cleanup_mounts[index]}"
    done
    mounts=()
done
# The same on this machine, natively, beside: what the emulated figures compare with.
say "===== native $(uname -m), the host's venv (a baseline beside the emulated runs)"
piagent_pid=""
start_fake
if smoke native "natively on $(uname -m)" "$REPO/prompts" /usr/bin/env -i -C "$tmp" -- "$PYTHON" -m piagent; then
    summary+=("native $(uname -m) baseline: first /health 200 after $startup_seconds s, idle RSS $rss")
else
    summary+=("native $(uname -m) baseline: FAIL")
    failures=$((failures + 1))
fi
say "===== pi-smoke summary (times under qemu user emulation on $(uname -m), $(nproc) cores, load average" \
    "$(cut -d" " -f1-3 /proc/loadavg) at the end)"
printf '%s\n' "${summary[@]}"
[ "$failures" -eq 0 ]
