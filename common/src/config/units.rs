//! Durations (`250ms`, `1h`) and byte sizes (`32MiB`) as written in `strata.toml`.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Parses `250ms`, `30s`, `5m`, `24h`, `7d`, and sums of them written
/// together, largest first: `1h30m`, `1m30s`, `2d12h` (units required).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let hint = "like 250ms, 30s, 5m, 1h30m or 7d";
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(format!("invalid duration {s:?}: expected a number and a unit, {hint}"));
    }
    let mut total: u64 = 0;
    let mut last_size = u64::MAX;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let n: u64 = rest[..digits].parse().map_err(|_| format!("invalid duration {s:?}: expected a number and a unit, {hint}"))?;
        let after = &rest[digits..];
        let unit_len = after.find(|c: char| c.is_ascii_digit()).unwrap_or(after.len());
        let size: u64 = match after[..unit_len].trim() {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(format!("invalid duration {s:?}: {n} has no unit (ms, s, m, h or d), {hint}")),
            _ => return Err(format!("invalid duration {s:?}: unit must be one of ms, s, m, h, d, {hint}")),
        };
        if size >= last_size {
            return Err(format!("invalid duration {s:?}: write its parts largest unit first, each unit once, {hint}"));
        }
        last_size = size;
        total = n.checked_mul(size).and_then(|ms| total.checked_add(ms)).ok_or_else(|| format!("duration {s:?} is too large"))?;
        rest = &after[unit_len..];
    }
    Ok(Duration::from_millis(total))
}

/// Prints a duration in the largest unit that keeps it whole.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// Parses `1048576`, `64KiB`, `32MiB`, `1GiB`, `500MB`, `10kB`.
pub fn parse_byte_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("invalid size {s:?}: expected a number with an optional unit, like 32MiB"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "kB" | "KB" => 1000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        _ => {
            return Err(format!("invalid size {s:?}: unit must be one of B, kB, KiB, MB, MiB, GB, GiB"));
        }
    };
    n.checked_mul(mult).ok_or_else(|| format!("size {s:?} is too large"))
}

pub(super) mod duration {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

pub(super) mod opt_duration {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map(Some).map_err(serde::de::Error::custom)
    }
}

/// Parses a listen address: `host:port` with an IP address
/// (`127.0.0.1:9464`, `[::1]:9464`), or `:port` for every interface
/// (`0.0.0.0:port`), as in containers.
pub fn parse_listen(s: &str) -> Result<std::net::SocketAddr, String> {
    let t = s.trim();
    let full = if t.starts_with(':') { format!("0.0.0.0{t}") } else { t.to_owned() };
    full.parse().map_err(|_| format!("invalid listen address {s:?}: expected IP:port like 127.0.0.1:9464 or [::]:9464, or :9464 for every interface"))
}

pub(super) mod opt_listen {
    use super::*;

    pub fn serialize<S: Serializer>(a: &Option<std::net::SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match a {
            Some(a) => s.serialize_str(&a.to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<std::net::SocketAddr>, D::Error> {
        let s = String::deserialize(d)?;
        parse_listen(&s).map(Some).map_err(serde::de::Error::custom)
    }
}

pub(super) mod byte_size {
    use super::*;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(u64),
        Str(String),
    }

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(*v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(n),
            Raw::Str(s) => parse_byte_size(&s).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_may_be_written_in_parts() {
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("2d12h").unwrap(), Duration::from_secs(2 * 86400 + 12 * 3600));
        assert_eq!(parse_duration("1s500ms").unwrap(), Duration::from_millis(1500));
        for bad in ["30m1h", "1h1h", "1h30", "", "h", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} is refused");
        }
    }

    #[test]
    fn listen_addresses_take_a_bare_port() {
        assert_eq!(parse_listen(":9464").unwrap(), "0.0.0.0:9464".parse().unwrap());
        assert_eq!(parse_listen("127.0.0.1:9465").unwrap(), "127.0.0.1:9465".parse().unwrap());
        assert_eq!(parse_listen("[::]:9464").unwrap(), "[::]:9464".parse().unwrap());
        for bad in ["9464", "localhost:9464", ":", ":99999"] {
            let e = parse_listen(bad).unwrap_err();
            assert!(e.contains(":9464 for every interface"), "{bad:?}: {e}");
        }
    }
}
