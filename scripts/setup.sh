# shellcheck shell=bash
# Shared set-up for scripts/netbroker, scripts/test and .ci/run; source it, then call
# netbroker_setup. It makes a fresh Debian 12 machine (python3, root or sudo) ready:
#   * .venv with the project installed editable, with its test extras; reinstalled when
#     pyproject.toml is newer than the stamp of the last install;
#   * Debian's zookeeper package and a Java runtime, which master/slave groups run
#     (embedded ZooKeeper), after `apt-get update`.
# Everything it prints goes to stderr, so a command's own output stays clean.

NETBROKER_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NETBROKER_VENV="$NETBROKER_ROOT/.venv"
NETBROKER_STAMP="$NETBROKER_VENV/.netbroker-installed"

_netbroker_as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    else
        sudo "$@"
    fi
}

_netbroker_apt_install() {
    echo "netbroker setup: installing Debian packages: $*" >&2
    _netbroker_as_root apt-get update -q >&2
    _netbroker_as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "$@" >&2
}

_netbroker_venv() {
    # A venv without a working pip (e.g. an earlier attempt that failed half way) is
    # rebuilt rather than trusted.
    if [[ -x "$NETBROKER_VENV/bin/python" ]] \
        && "$NETBROKER_VENV/bin/python" -m pip --version >/dev/null 2>&1; then
        return 0
    fi
    # Debian's python3 ships venv without ensurepip; python3-venv brings it.
    if ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
        _netbroker_apt_install python3-venv
    fi
    echo "netbroker setup: creating $NETBROKER_VENV" >&2
    rm -rf "$NETBROKER_VENV"
    python3 -m venv "$NETBROKER_VENV" >&2
    rm -f "$NETBROKER_STAMP"
}

netbroker_setup() {
    _netbroker_venv
    if [[ ! -f "$NETBROKER_STAMP" || "$NETBROKER_ROOT/pyproject.toml" -nt "$NETBROKER_STAMP" ]]
    then
        echo "netbroker setup: installing the project into $NETBROKER_VENV" >&2
        "$NETBROKER_VENV/bin/python" -m pip install -q --disable-pip-version-check \
            -e "$NETBROKER_ROOT[test]" >&2
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
