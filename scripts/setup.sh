# shellcheck shell=bash
# Shared set-up for scripts/netbroker, scripts/test and .ci/run; source it, then call
# netbroker_setup. It makes a fresh Debian 12 machine (python3, root or sudo) ready:
#   * .venv with the project installed editable, with its test extras; reinstalled when
#     pyproject.toml is newer than the stamp of the last install;
#   * Debian's zookeeper package and a Java runtime, which master/slave groups run
#     (embedded ZooKeeper), after `apt-get update`;
#   * for the test suite only (netbroker_test_setup, called by scripts/test and .ci/run):
#     Debian's chromium and chromium-driver, which the web console's browser test drives.
# It prints one line per step it takes (nothing when there is nothing to do), to stderr so
# that a command's own output stays clean; what the tools print goes to a log file, whose
# last lines are shown if a step fails.

NETBROKER_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NETBROKER_VENV="$NETBROKER_ROOT/.venv"
NETBROKER_STAMP="$NETBROKER_VENV/.netbroker-installed"
NETBROKER_SETUP_LOG="$NETBROKER_ROOT/.netbroker-setup.log"

# Run one step: "netbroker setup: WHAT ... done (Ns)", its output appended to the log.
_netbroker_step() {
    local what="$1"
    shift
    local started=$SECONDS
    printf 'netbroker setup: %s ... ' "$what" >&2
    echo "=== $(date -u +%FT%TZ) $what: $*" >>"$NETBROKER_SETUP_LOG"
    local status=0
    "$@" >>"$NETBROKER_SETUP_LOG" 2>&1 || status=$?
    if ((status == 0)); then
        echo "done ($((SECONDS - started))s)" >&2
        return 0
    fi
    echo "failed (exit $status); the last lines of $NETBROKER_SETUP_LOG:" >&2
    tail -n 15 "$NETBROKER_SETUP_LOG" >&2
    return "$status"
}

_netbroker_as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    else
        sudo "$@"
    fi
}

_netbroker_apt_install() {
    # A busy machine (unattended upgrades, another install) holds dpkg's lock: wait for
    # it, up to ten minutes, rather than fail.
    local wait=(-o DPkg::Lock::Timeout=600)
    _netbroker_step "updating the Debian package lists" \
        _netbroker_as_root apt-get "${wait[@]}" update -q
    _netbroker_step "installing Debian packages: $*" \
        _netbroker_as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get "${wait[@]}" install -y -q --no-install-recommends "$@"
}

# The interpreter of the venv. Debian's own CPython is built with PGO and LTO and links
# libpython in: the broker runs about 13% fewer instructions per STOMP frame on it (and
# 20-35% less time) than on a shared-library build without PGO, such as pyenv's default,
# which may come first on PATH. NETBROKER_PYTHON chooses another.
_netbroker_python() {
    if [[ -n "${NETBROKER_PYTHON:-}" ]]; then
        echo "$NETBROKER_PYTHON"
    elif [[ -x /usr/bin/python3 ]] \
        && /usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
    then
        echo /usr/bin/python3
    else
        echo python3
    fi
}

_netbroker_venv() {
    local python
    python="$(_netbroker_python)"
    local wanted
    wanted="$("$python" -c 'import os, sys; print(os.path.realpath(sys.executable))')"
    # A venv without a working pip (e.g. an earlier attempt that failed half way), or on
    # another interpreter than the one chosen, is rebuilt rather than trusted.
    if [[ -x "$NETBROKER_VENV/bin/python" ]] \
        && "$NETBROKER_VENV/bin/python" -m pip --version >/dev/null 2>&1 \
        && [[ "$("$NETBROKER_VENV/bin/python" -c \
            'import os, sys; print(os.path.realpath(sys._base_executable))')" == "$wanted" ]]
    then
        return 0
    fi
    # Debian's python3 ships venv without ensurepip; python3-venv brings it.
    if ! "$python" -c 'import ensurepip' >/dev/null 2>&1; then
        _netbroker_apt_install python3-venv
    fi
    rm -rf "$NETBROKER_VENV"
    _netbroker_step "creating $NETBROKER_VENV ($wanted)" "$python" -m venv "$NETBROKER_VENV"
    rm -f "$NETBROKER_STAMP"
}

netbroker_setup() {
    _netbroker_venv
    if [[ ! -f "$NETBROKER_STAMP" || "$NETBROKER_ROOT/pyproject.toml" -nt "$NETBROKER_STAMP" ]]
    then
        _netbroker_step "installing the project and its dependencies into $NETBROKER_VENV" \
            "$NETBROKER_VENV/bin/python" -m pip install --disable-pip-version-check \
            -e "$NETBROKER_ROOT[test]"
        touch "$NETBROKER_STAMP"
    fi
    # Master/slave groups elect through Apache ZooKeeper, run from Debian's package (the
    # embedded ZooKeeper of `netbroker up`, and the tests); it runs on Java. Both are
    # checked, not just the package: a machine may have the jars but no `java` on PATH.
    local packages=()
    if [[ ! -f /usr/share/java/zookeeper.jar ]]; then
        packages+=(zookeeper)
    fi
    if ! command -v java >/dev/null 2>&1; then
        packages+=(default-jre-headless)
    fi
    # The multicast tests build real network namespaces with `ip netns` and veth pairs.
    if ! command -v ip >/dev/null 2>&1; then
        packages+=(iproute2)
    fi
    if ((${#packages[@]})); then
        _netbroker_apt_install "${packages[@]}"
    fi
}

# What only the test suite needs, beyond netbroker_setup: Debian's Chromium and its
# WebDriver, which tests/integration/test_console.py drives headless (through selenium,
# from the test extras). Running brokers needs no browser, so scripts/netbroker skips it.
netbroker_test_setup() {
    local packages=()
    if [[ ! -x /usr/bin/chromium ]]; then
        packages+=(chromium)
    fi
    if [[ ! -x /usr/bin/chromedriver ]]; then
        packages+=(chromium-driver)
    fi
    if ((${#packages[@]})); then
        _netbroker_apt_install "${packages[@]}"
    fi
}
