//! A JSON tree whose objects keep their keys in the order they were made:
//! Debezium's records list fields in schema order, and consumers that
//! compare bytes, or read positionally, see the same order from strata.
//! (`serde_json::Value` sorts keys unless the whole build enables its
//! `preserve_order` feature, which would change every other JSON strata
//! writes.)
//!
//! Floats keep their width: a `float4` is written as the shortest text that
//! reads back as that `f32` (`0.1`), as Jackson writes Java's `float`, not
//! as the `f64` it widens to (`0.10000000149011612`).

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Float32(f32),
    Float64(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// An object of `fields`, in that order.
    pub fn obj<K: Into<String>>(fields: impl IntoIterator<Item = (K, Json)>) -> Json {
        Json::Obj(fields.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    pub fn str(s: impl Into<String>) -> Json {
        Json::Str(s.into())
    }

    /// The value under `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Compact text, as Kafka's `JsonConverter` writes it.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| unreachable!("a Json tree always serializes"))
    }

    /// Parses JSON text, keeping the order of object keys.
    pub fn parse(text: &str) -> Result<Json, serde_json::Error> {
        serde_json::from_str(text)
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => s.serialize_unit(),
            Json::Bool(b) => s.serialize_bool(*b),
            Json::Int(i) => s.serialize_i64(*i),
            Json::Float32(f) => s.serialize_f32(*f),
            Json::Float64(f) => s.serialize_f64(*f),
            Json::Str(v) => s.serialize_str(v),
            Json::Arr(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Json::Obj(fields) => {
                let mut map = s.serialize_map(Some(fields.len()))?;
                for (k, v) in fields {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Json, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Json;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<Json, E> {
                Ok(Json::Bool(b))
            }
            fn visit_i64<E: de::Error>(self, i: i64) -> Result<Json, E> {
                Ok(Json::Int(i))
            }
            fn visit_u64<E: de::Error>(self, u: u64) -> Result<Json, E> {
                Ok(i64::try_from(u).map_or(Json::Float64(u as f64), Json::Int))
            }
            fn visit_f64<E: de::Error>(self, f: f64) -> Result<Json, E> {
                Ok(Json::Float64(f))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
                Ok(Json::Str(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Json, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = a.next_element()? {
                    items.push(item);
                }
                Ok(Json::Arr(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Json, A::Error> {
                let mut fields = Vec::new();
                while let Some((k, v)) = a.next_entry::<String, Json>()? {
                    fields.push((k, v));
                }
                Ok(Json::Obj(fields))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_their_order_and_floats_their_width() {
        let j = Json::obj([("z", Json::Int(1)), ("a", Json::Float32(0.1)), ("m", Json::Float64(1e300))]);
        assert_eq!(j.to_text(), r#"{"z":1,"a":0.1,"m":1e+300}"#);
        assert_eq!(Json::parse(r#"{"b":[1,null,"x"],"a":{"d":true,"c":2.5}}"#).unwrap().to_text(), r#"{"b":[1,null,"x"],"a":{"d":true,"c":2.5}}"#);
        // Jackson's 1.0E300 is the same double.
        assert_eq!(Json::parse("1.0E300").unwrap(), Json::Float64(1e300));
    }
}
