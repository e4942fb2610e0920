//! Source tables shared by several tests.

/// A table with a column of every mapped type (and an enum and a type
/// without a native mapping), created by [`ALL_TYPES_DDL`].
pub const ALL_TYPES_DDL: &str = r#"
        CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
        CREATE TABLE all_types (
            id int PRIMARY KEY, b bool, i2 int2, i8 int8, f4 float4, f8 float8, n numeric(12,3), nu numeric,
            t text, c char(3), by bytea, d date, tm time, ts timestamp, tz timestamptz, iv interval, u uuid,
            j json, jb jsonb, ai int4[], atx text[], e mood, other inet);
"#;

/// Three rows of `all_types`: ordinary values, all NULLs, and extremes
/// (NaN, ±infinity, 24:00, BC dates, escapes, empty arrays and bytea).
pub const ALL_TYPES_ROWS: &str = r#"
        INSERT INTO all_types VALUES
          (1, true, 12, 1234567890123, 1.5, 2.25, 123456789.123, 3.14159265358979, 'plain', 'ab', '\x00ff',
           '2026-11-20', '13:45:06.5', '2026-11-20 10:00:00.000001', '2026-11-20 10:00:00+02', '1 year 2 mons 3 days 04:05:06.7',
           'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"a": [1, 2]}', '{"b": null}', '{1,2,3}', '{"x","y z"}', 'happy', '10.1.2.3/8'),
          (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
          (3, false, -32768, -9223372036854775808, 'NaN', '-Infinity', -999999999.999, 'NaN', E'tab\there\nnewline \\ "q"', '   ',
           '\x', '4713-01-01 BC', '24:00:00', '-infinity', 'infinity', '-1 years -2 days +03:04:05.678901',
           '00000000-0000-0000-0000-000000000000', '[]', '{}', '{}', '{"a,b",NULL,"\""}', 'sad', '::1');
"#;
