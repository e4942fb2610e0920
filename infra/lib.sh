#!/usr/bin/env bash
# Helpers shared by infra/test, infra/quickstart and .ci/run. Source it:
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# Every ensure_* is idempotent: on a machine that already has what it
# provides it installs nothing and is quick. The scripts that source it run
# under `set -euo pipefail`; it does not set shell options itself, so that
# sourcing it into an interactive shell is harmless.

STRATA_PG_VERSION=15
STRATA_PG_PACKAGE="postgresql-${STRATA_PG_VERSION}"

strata_log() {
    printf '%s\n' "$*" >&2
}

strata_die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# The repository root: the parent of the directory holding this file.
strata_repo_root() {
    (cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
}

# Needs root for apt-get; use sudo when not root and sudo exists.
strata_as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        strata_die "need root to run: $*"
    fi
}

# Runs `apt-get update` at most once per process; call it only just before
# something has to be installed.
_STRATA_APT_UPDATED=${_STRATA_APT_UPDATED:-0}
ensure_apt_updated() {
    if [ "$_STRATA_APT_UPDATED" = 1 ]; then
        return 0
    fi
    strata_log "apt: updating package lists"
    strata_as_root apt-get update -qq >&2
    _STRATA_APT_UPDATED=1
}

strata_apt_install() {
    ensure_apt_updated
    strata_log "apt: installing $*"
    strata_as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@" >&2
}

# Stops the packaged default cluster if the package install started one;
# tests run their own throwaway clusters. Failure here is not fatal.
_strata_stop_default_cluster() {
    if command -v pg_ctlcluster >/dev/null 2>&1; then
        strata_as_root pg_ctlcluster "$STRATA_PG_VERSION" main stop >/dev/null 2>&1 || true
    fi
    if command -v service >/dev/null 2>&1; then
        strata_as_root service postgresql stop >/dev/null 2>&1 || true
    fi
}

# PostgreSQL server binaries (initdb, pg_ctl, postgres) for the tests'
# throwaway clusters. Exports STRATA_PG_BIN.
ensure_postgres() {
    local bin="/usr/lib/postgresql/${STRATA_PG_VERSION}/bin"
    if [ ! -x "$bin/initdb" ]; then
        command -v apt-get >/dev/null 2>&1 ||
            strata_die "$bin/initdb is missing and there is no apt-get to install $STRATA_PG_PACKAGE"
        strata_apt_install "$STRATA_PG_PACKAGE"
        _strata_stop_default_cluster
        [ -x "$bin/initdb" ] || strata_die "$STRATA_PG_PACKAGE installed but $bin/initdb is missing"
    fi
    # initdb refuses to run as root, so tests run the server as `postgres`
    # (via runuser) when they are root.
    if ! getent passwd postgres >/dev/null 2>&1; then
        strata_log "postgres: creating the postgres user"
        strata_as_root useradd --system --user-group --home-dir /var/lib/postgresql \
            --shell /bin/bash postgres
    fi
    if ! command -v runuser >/dev/null 2>&1 && [ ! -x /usr/sbin/runuser ] && [ ! -x /sbin/runuser ]; then
        strata_apt_install util-linux
    fi
    export STRATA_PG_BIN="$bin"
    strata_log "postgres: $("$bin/postgres" --version)"
}

# For the quickstart: the newest PostgreSQL >= 14 that apt can install (or
# that is installed, without apt), installed if missing. Sets
# STRATA_PG_VERSION and exports STRATA_PG_BIN.
ensure_newest_postgres() {
    local installed="" installable="" v
    for v in /usr/lib/postgresql/*/bin/initdb; do
        [ -x "$v" ] || continue
        v="${v#/usr/lib/postgresql/}"
        v="${v%%/*}"
        [[ "$v" =~ ^[0-9]+$ ]] && [ "$v" -ge 14 ] && [ "$v" -gt "${installed:-0}" ] && installed="$v"
    done
    if command -v apt-cache >/dev/null 2>&1; then
        [ -n "$(apt-cache search --names-only '^postgresql-[0-9]+$' 2>/dev/null)" ] || ensure_apt_updated
        installable="$(apt-cache search --names-only '^postgresql-[0-9]+$' 2>/dev/null |
            sed -n 's/^postgresql-\([0-9][0-9]*\) .*/\1/p' | sort -n | tail -n 1)"
    fi
    if [ -n "$installable" ] && [ "$installable" -ge 14 ] && [ "$installable" -gt "${installed:-0}" ]; then
        STRATA_PG_VERSION="$installable"
    elif [ -n "$installed" ]; then
        STRATA_PG_VERSION="$installed"
    else
        strata_die "no PostgreSQL 14 or newer is installed or installable with apt-get"
    fi
    STRATA_PG_PACKAGE="postgresql-${STRATA_PG_VERSION}"
    ensure_postgres
}

# The Rust toolchain is at least the workspace's rust-version (Cargo.toml).
ensure_rust_version() {
    local want have
    want="$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' "$(strata_repo_root)/Cargo.toml" | head -n 1)"
    have="$(rustc --version | sed -n 's/^rustc \([0-9][0-9.]*\).*/\1/p')"
    [ -n "$want" ] && [ -n "$have" ] || strata_die "could not read the Rust versions (want ${want:-?}, rustc says ${have:-?})"
    if [ "$(printf '%s\n%s\n' "$want" "$have" | sort -V | head -n 1)" != "$want" ]; then
        strata_die "strata needs Rust $want or newer; rustc is $have (rustup update)"
    fi
    strata_log "rust: rustc $have (needs $want)"
}

# The `openssl` command, which the TLS tests use to make a test CA and
# server and client certificates.
ensure_openssl() {
    if ! command -v openssl >/dev/null 2>&1; then
        command -v apt-get >/dev/null 2>&1 || strata_die "openssl is missing and there is no apt-get to install it"
        strata_apt_install openssl
    fi
    strata_log "openssl: $(openssl version)"
}

# promtool (Debian's prometheus package), which checks and unit-tests
# infra/prometheus/alerts.yaml. The package's server is not started.
ensure_promtool() {
    if ! command -v promtool >/dev/null 2>&1; then
        command -v apt-get >/dev/null 2>&1 || strata_die "promtool is missing and there is no apt-get to install prometheus"
        strata_apt_install prometheus
        if command -v service >/dev/null 2>&1; then
            strata_as_root service prometheus stop >/dev/null 2>&1 || true
        fi
    fi
    strata_log "promtool: $(promtool --version 2>&1 | head -n 1)"
}

_strata_sha256() {
    sha256sum "$1" | cut -d' ' -f1
}

# A Python virtualenv holding infra/requirements.txt, at
# ${STRATA_VENV:-$HOME/.cache/strata/venv}. Reinstalls only when
# requirements.txt changed since the last install. Exports STRATA_VENV.
ensure_venv() {
    local root venv reqs stamp want
    root="$(strata_repo_root)"
    venv="${STRATA_VENV:-$HOME/.cache/strata/venv}"
    reqs="$root/infra/requirements.txt"
    stamp="$venv/.strata-requirements.sha256"
    command -v python3 >/dev/null 2>&1 || strata_apt_install python3 python3-venv

    if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
        strata_log "venv: creating $venv"
        rm -rf "$venv"
        mkdir -p "$(dirname "$venv")"
        if ! python3 -m venv "$venv" >&2; then
            rm -rf "$venv"
            # Debian's own python3 ships venv/ensurepip separately.
            if [ "$(command -v python3)" = /usr/bin/python3 ] && command -v apt-get >/dev/null 2>&1; then
                strata_apt_install python3-venv
                python3 -m venv "$venv" >&2 || strata_die "could not create a venv at $venv"
            else
                strata_die "python3 -m venv failed ($(command -v python3))"
            fi
        fi
    fi

    want="$(_strata_sha256 "$reqs")"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        strata_log "venv: installing infra/requirements.txt"
        rm -f "$stamp"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            --no-input -r "$reqs" >&2
        printf '%s\n' "$want" >"$stamp"
    fi
    export STRATA_VENV="$venv"
    strata_log "venv: $venv ready"
}

# cargo is required (the toolchain cannot be fetched here). Exports
# STRATA_TEST_RUNNER=nextest when cargo-nextest is installed, else cargo-test.
ensure_rust_tools() {
    command -v cargo >/dev/null 2>&1 ||
        strata_die "cargo not found: install a Rust toolchain (rustup) and put cargo on PATH"
    if cargo nextest --version >/dev/null 2>&1; then
        STRATA_TEST_RUNNER=nextest
    else
        STRATA_TEST_RUNNER=cargo-test
        strata_log "rust: cargo-nextest not found, using cargo test"
    fi
    export STRATA_TEST_RUNNER
}

# Prints a TCP port on 127.0.0.1 that was free a moment ago.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
