#!/usr/bin/env bash
# Regenerates the seed corpora fuzz/corpus/<target>/ from a real capture:
#
#   1. a throwaway PostgreSQL cluster (wal_level = logical) holding the
#      `all_types` table of tests/src/fixtures.rs (a column of every mapped
#      type, ordinary values, NULLs and extremes) and a table with an
#      out-of-line TOASTed column;
#   2. pgoutput: the messages its changes decode to, read from a pgoutput
#      slot with pg_logical_slot_peek_binary_changes (exactly the payloads
#      the reader's replication stream carries);
#   3. pgtext: every value's text output under the reader's session settings;
#   4. a stage written by strata-reader (snapshot, then streamed changes and
#      a backfill) and strata-writer (a files destination declared with
#      transforms, run until it delivered, and a replay request): its
#      manifests, schema versions, data files and control objects;
#   5. config and destinations files: strata.example.toml, the compose and
#      capture configs, and the capture's `destination export`.
#
# Usage: fuzz/seeds.sh   (binaries from $STRATA_BIN, default target/debug,
# built with `cargo build --bins` when missing; PostgreSQL from $PG_BIN or
# PATH). Replaces the files of fuzz/corpus/.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${STRATA_BIN:-$root/target/debug}
pg_bin=${PG_BIN:-$(dirname "$(command -v initdb)")}
corpus=$root/fuzz/corpus
if [[ ! -x $bin/strata-reader || ! -x $bin/strata-writer ]]; then
    (cd "$root" && nice -n 10 cargo build --bins -p strata-reader -p strata-writer)
fi

work=$(mktemp -d /tmp/strata-fuzz-seeds.XXXXXX)
chmod 755 "$work"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_pg=()
if [[ $(id -u) == 0 ]]; then
    as_pg=(runuser -u postgres --)
fi
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$work/pg" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/pg" && [[ ${#as_pg[@]} == 0 ]] || chown postgres "$work/pg"
"${as_pg[@]}" "$pg_bin/initdb" -D "$work/pg" -U postgres -A trust -E UTF8 --no-sync >/dev/null
printf "listen_addresses = '127.0.0.1'\nport = %s\nunix_socket_directories = '%s/pg'\nwal_level = logical\nfsync = off\n" "$port" "$work" >>"$work/pg/postgresql.conf"
"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$work/pg" -l "$work/pg/server.log" -w start >/dev/null
url="postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable"
sql() { psql -X -q -v ON_ERROR_STOP=1 "$url" "$@" >/dev/null; }
query() { psql -X -q -v ON_ERROR_STOP=1 "$url" "$@"; }

# The fixture's DDL and rows, as the tests create them.
python3 - "$root/tests/src/fixtures.rs" >"$work/all_types.sql" <<'EOF'
import re, sys
src = open(sys.argv[1]).read()
for name in ("ALL_TYPES_DDL", "ALL_TYPES_ROWS"):
    print(re.search(name + r': &str = r#"(.*?)"#;', src, re.S).group(1))
EOF
ddl_end=$(grep -n 'other inet);' "$work/all_types.sql" | cut -d: -f1)
head -n "$ddl_end" "$work/all_types.sql" >"$work/ddl.sql"
tail -n +"$((ddl_end + 1))" "$work/all_types.sql" >"$work/rows.sql"
sql -f "$work/ddl.sql"
sql -c "CREATE TABLE toasty (id int PRIMARY KEY, big text, n int); ALTER TABLE toasty ALTER big SET STORAGE EXTERNAL;
        CREATE PUBLICATION fuzz_seed FOR ALL TABLES;"
sql -c "SELECT pg_create_logical_replication_slot('fuzz_seed', 'pgoutput');"

# 2. pgoutput: one file per message.
sql -f "$work/rows.sql"
sql -c "INSERT INTO toasty VALUES (1, repeat('x', 10000), 1);
        UPDATE toasty SET n = 2 WHERE id = 1;
        UPDATE all_types SET t = 'changed', id = 4 WHERE id = 1;
        ALTER TABLE all_types REPLICA IDENTITY FULL;
        UPDATE all_types SET b = NOT b WHERE id = 3;
        DELETE FROM all_types WHERE id = 2;
        SELECT pg_logical_emit_message(true, 'strata', 'transactional');
        SELECT pg_logical_emit_message(false, 'strata', 'not transactional');
        TRUNCATE toasty, all_types RESTART IDENTITY CASCADE;"
rm -rf "${corpus:?}"/*/
mkdir -p "$corpus"/{pgoutput,pgtext,manifest,schema,parquet,control,config,destinations,transforms}
query -At -c "SELECT encode(data, 'hex') FROM pg_logical_slot_peek_binary_changes('fuzz_seed', NULL, NULL,
            'proto_version', '1', 'publication_names', 'fuzz_seed', 'messages', 'true')" >"$work/pgoutput.hex"
python3 - "$work/pgoutput.hex" "$corpus/pgoutput" <<'EOF'
import sys
for i, line in enumerate(open(sys.argv[1])):
    data = bytes.fromhex(line.strip())
    open(f"{sys.argv[2]}/{i:03}-{chr(data[0])}.bin", "wb").write(data)
EOF
sql -c "SELECT pg_drop_replication_slot('fuzz_seed'); DROP PUBLICATION fuzz_seed; TRUNCATE all_types;"

# 3. pgtext: the fuzz target's type selector byte (see fuzz_targets/pgtext.rs),
# then the value's text output under the reader's settings.
sql -f "$work/rows.sql"
settings="SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'iso_8601'; SET TimeZone = 'UTC'; SET bytea_output = 'hex'; SET extra_float_digits = 3;"
query -At -c "$settings" -c "SELECT col, encode(convert_to(v, 'UTF8'), 'hex') FROM all_types,
    LATERAL (VALUES ('b', b::text), ('i2', i2::text), ('id', id::text), ('i8', i8::text), ('f4', f4::text), ('f8', f8::text),
                    ('n', n::text), ('t', t), ('j', j::text), ('by', by::text), ('d', d::text), ('tm', tm::text), ('ts', ts::text),
                    ('tz', tz::text), ('iv', iv::text), ('u', u::text), ('ai', ai::text), ('atx', atx::text)) AS x(col, v)
    WHERE v IS NOT NULL" >"$work/pgtext.txt"
python3 - "$work/pgtext.txt" "$corpus/pgtext" <<'EOF'
import sys
selector = {"b": b"\x00", "i2": b"\x01", "id": b"\x02", "i8": b"\x03", "f4": b"\x04", "f8": b"\x05", "n": b"\x06\x0b\x03",
            "t": b"\x07", "j": b"\x08", "by": b"\x09", "d": b"\x0a", "tm": b"\x0b", "ts": b"\x0c", "tz": b"\x0d", "iv": b"\x0e",
            "u": b"\x0f", "ai": b"\x12", "atx": b"\x17"}
seen = set()
for line in open(sys.argv[1]):
    col, hexv = line.rstrip("\n").split("|")
    data = selector[col] + bytes.fromhex(hexv)
    if data not in seen:
        seen.add(data)
        open(f"{sys.argv[2]}/{col}-{len(seen):02}.txt", "wb").write(data)
EOF

# 4. A stage: the reader snapshots all_types, streams changes and a backfill.
cat >"$work/strata.toml" <<EOF
[stage]
url = "$work/stage"

[source]
url = "$url"
tables = ["public.*"]

[batch]
max_age = "50ms"
EOF
log() { echo "seeds: $*" >&2; }
"$bin/strata-reader" --config "$work/strata.toml" >"$work/reader.log" 2>&1 &
pids+=($!)
wait_for() { for _ in $(seq 1 300); do if eval "$1"; then return 0; fi; sleep 0.1; done; log "timed out waiting for: $1"; cat "$work/reader.log" >&2; exit 1; }
wait_for "[[ -f $work/stage/streams/main/snapshot.json ]] && grep -q '\"done\"' $work/stage/streams/main/snapshot.json"
sql -c "INSERT INTO toasty VALUES (1, repeat('x', 10000), 1);
        UPDATE toasty SET n = 2 WHERE id = 1;
        UPDATE all_types SET t = 'changed' WHERE id = 1;
        DELETE FROM all_types WHERE id = 2;
        ALTER TABLE all_types ADD COLUMN added int DEFAULT 7;
        INSERT INTO all_types (id, t) VALUES (5, 'after add column');"
"$bin/strata-reader" --config "$work/strata.toml" backfill --table public.toasty >/dev/null 2>&1 || log "backfill request failed"
sleep 3
cat >"$work/destinations.toml" <<EOF
[destination.files]
start = "earliest"
[destination.files.to]
type = "files"
url = "file://$work/out"
[destination.files.transforms]
exclude = ["audit.*"]
columns = [
  { table = "public.all_types", column = "t", action = "redact", text = "[gone]" },
  { table = "public.all_types", column = "u", action = "hash" },
  { table = "public.all_types", column = "jb", action = "fake", kind = "email" },
  { table = "public.all_types", column = "by", action = "drop" },
]
filters = [{ table = "public.all_types", column = "id", op = "not_in", values = ["999"] }]
hash_key = "\${MASK_KEY}"

[destination.later]
start = "latest"
on_error = "pause"
schedule = "every 10m"
[destination.later.to]
type = "stdout"
EOF
export MASK_KEY=seed-key
"$bin/strata-writer" --config "$work/strata.toml" destination apply -f "$work/destinations.toml" >/dev/null
"$bin/strata-writer" --config "$work/strata.toml" >"$work/writer.log" 2>&1 &
pids+=($!)
wait_for "[[ -f $work/stage/destinations/files/cursor.json ]]"
sleep 2
"$bin/strata-writer" --config "$work/strata.toml" replay --destination files --from 2000-01-01T00:00:00Z >/dev/null
sleep 2
"$bin/strata-writer" --config "$work/strata.toml" destination export >"$corpus/destinations/exported.toml"
for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
wait || true
pids=()

stage=$work/stage
for f in $(find "$stage/streams/main/log" -name '*.json' | sort | head -12); do cp "$f" "$corpus/manifest/"; done
find "$stage/streams/main/schemas" -name '*.json' | while read -r f; do
    cp "$f" "$corpus/schema/$(basename "$(dirname "$f")")-$(basename "$f")"
done
find "$stage/streams/main/tables" -name '*.parquet' -size -40k | sort | head -12 | while read -r f; do
    cp "$f" "$corpus/parquet/$(basename "$(dirname "$(dirname "$(dirname "$f")")")")-$(basename "$f")"
done
# Uncompressed copies, whose pages the fuzzer can mutate (zstd hides them),
# when a Python with pyarrow is at hand (infra/test installs one).
python=${STRATA_PYTHON:-$HOME/.cache/strata/venv/bin/python}
if "$python" -c 'import pyarrow' 2>/dev/null; then
    for f in $(find "$stage/streams/main/tables" -name '*.parquet' -size -40k | sort | head -2); do
        "$python" -c 'import sys, pyarrow.parquet as pq; pq.write_table(pq.read_table(sys.argv[1]), sys.argv[2], compression="none")' \
            "$f" "$corpus/parquet/uncompressed-$(basename "$(dirname "$(dirname "$(dirname "$f")")")")-$(basename "$f")"
    done
fi
( cd "$stage" && find destinations streams replays control.json -maxdepth 3 -name '*.json' ! -path '*/log/*' ! -path '*/schemas/*' 2>/dev/null ) |
    while read -r f; do cp "$stage/$f" "$corpus/control/$(echo "$f" | tr '/' '_')"; done
python3 - "$stage/destinations/files/spec.json" "$corpus/transforms" "$root/writer/src/transform.rs" <<'EOF'
import json, re, sys
spec = json.load(open(sys.argv[1]))
json.dump(spec["transforms"], open(f"{sys.argv[2]}/captured.json", "w"), indent=2)
doc = re.search(r'```json\n(.*?)//! ```', open(sys.argv[3]).read(), re.S).group(1)
doc = "\n".join(l.removeprefix("//!").removeprefix(" ") for l in doc.splitlines())
open(f"{sys.argv[2]}/documented.json", "w").write("{" + doc.split("{", 1)[1].rsplit("}", 1)[0] + "}")
EOF
cp "$work/destinations.toml" "$corpus/destinations/declared.toml"
sed -n '/^\/\/! ```toml/,/^\/\/! ```$/p' "$root/writer/src/declare.rs" | sed -e '1d;$d' -e 's/^\/\/! \{0,1\}//' >"$corpus/destinations/documented.toml"
cp "$work/strata.toml" "$corpus/config/capture.toml"
cp "$root/strata.example.toml" "$corpus/config/example.toml"
cp "$root/infra/strata.compose.toml" "$corpus/config/compose.toml"
printf '%s\0%s\n%s\n' "$(cat "$work/strata.toml")" "STRATA_BATCH__MAX_ROWS=10" "STRATA_SOURCE__STREAM=other" >"$corpus/config/capture-with-overrides.toml"
sed -i "s#$work#/tmp/capture#g" "$corpus"/config/* "$corpus"/destinations/* "$corpus"/control/* 2>/dev/null || true
du -sh "$corpus" && find "$corpus" -type f | cut -d/ -f1- | sed "s#$corpus/##" | cut -d/ -f1 | sort | uniq -c
