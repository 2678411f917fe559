//! JSON read and edited as written. Records and `tree/project.json` are
//! kept byte for byte; where they must be read as a whole (a member
//! replaced, a record's identity) it happens here without a float round
//! trip: `123456789012345678901234567890` stays itself, `1.10` stays
//! `1.10`, `1e999999` is a number like any other, and duplicate keys stay.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// An object's members in order, duplicates kept: each key decoded, each
/// value as written.
pub fn members(object: &str) -> serde_json::Result<Vec<(String, &RawValue)>> {
    struct Members;

    impl<'de> Visitor<'de> for Members {
        type Value = Vec<(String, &'de RawValue)>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(key) = map.next_key::<String>()? {
                out.push((key, map.next_value::<&'de RawValue>()?));
            }
            Ok(out)
        }
    }

    let mut de = serde_json::Deserializer::from_str(object);
    let members = de.deserialize_map(Members)?;
    de.end()?;
    Ok(members)
}

/// An object written from its members, in order, compactly.
pub fn object<'a>(members: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::from("{");
    for (i, (key, value)) in members.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::Value::from(key).to_string());
        out.push(':');
        out.push_str(value.trim());
    }
    out.push('}');
    out
}

/// `object` with the members named in `updates` set to their values (JSON
/// text): every member of that name replaced, or one added at the end.
/// Every other member stays as written.
pub fn with_members(object_text: &str, updates: &[(&str, String)]) -> serde_json::Result<String> {
    let existing = members(object_text)?;
    let mut out: Vec<(&str, &str)> = existing
        .iter()
        .map(|(key, value)| {
            let updated = updates.iter().find(|(name, _)| name == key);
            (
                key.as_str(),
                updated.map_or(value.get(), |(_, v)| v.as_str()),
            )
        })
        .collect();
    for (name, value) in updates {
        if !existing.iter().any(|(key, _)| key == name) {
            out.push((name, value.as_str()));
        }
    }
    Ok(object(out))
}

/// JSON with object keys sorted and strings in one spelling, numbers and
/// literals as written: two spellings of one record give the same text,
/// two records differing anywhere (past a float's precision too) do not.
pub fn canonical(json: &str, out: &mut impl FnMut(&[u8])) -> serde_json::Result<()> {
    let json = json.trim();
    match json.as_bytes().first() {
        Some(b'{') => {
            let mut entries = members(json)?;
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            out(b"{");
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out(b",");
                }
                out(serde_json::Value::from(key).to_string().as_bytes());
                out(b":");
                canonical(value.get(), out)?;
            }
            out(b"}");
        }
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(json)?;
            out(b"[");
            for (i, item) in items.into_iter().enumerate() {
                if i > 0 {
                    out(b",");
                }
                canonical(item.get(), out)?;
            }
            out(b"]");
        }
        Some(b'"') => {
            let text: String = serde_json::from_str(json)?;
            out(serde_json::Value::from(text).to_string().as_bytes());
        }
        Some(_) => {
            // A number or a literal: checked, then taken as written.
            serde_json::from_str::<de::IgnoredAny>(json)?;
            out(json.as_bytes());
        }
        None => return Err(de::Error::custom("empty JSON")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical_text(json: &str) -> String {
        let mut out = Vec::new();
        canonical(json, &mut |bytes| out.extend_from_slice(bytes)).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn members_keep_numbers_and_duplicates_as_written() {
        let text = r#"{"big":123456789012345678901234567890,"x":1.10,"x":2,"huge":1e999999}"#;
        let found: Vec<(String, String)> = members(text)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, v.get().to_owned()))
            .collect();
        assert_eq!(
            found,
            [
                ("big", "123456789012345678901234567890"),
                ("x", "1.10"),
                ("x", "2"),
                ("huge", "1e999999")
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn an_edit_changes_only_the_members_it_names() {
        let text = "{\n  \"description\": \"old\",\n  \"n\": 1.10,\n  \"n\": 1e999999\n}";
        let edited = with_members(text, &[("description", "\"new\"".into())]).unwrap();
        assert_eq!(edited, r#"{"description":"new","n":1.10,"n":1e999999}"#);
        let added = with_members("{}", &[("visibility_level", "20".into())]).unwrap();
        assert_eq!(added, r#"{"visibility_level":20}"#);
        assert!(with_members("[1]", &[]).is_err());
    }

    #[test]
    fn canonical_text_sorts_keys_and_keeps_numbers() {
        assert_eq!(
            canonical_text(r#"{"b": [1.10, "\u00e9"], "a": 123456789012345678901234567890}"#),
            r#"{"a":123456789012345678901234567890,"b":[1.10,"é"]}"#
        );
        assert_ne!(
            canonical_text(r#"{"id":123456789012345678901234567890}"#),
            canonical_text(r#"{"id":123456789012345678901234567891}"#)
        );
        assert_eq!(
            canonical_text(r#"{"a":1,"b":2}"#),
            canonical_text(r#"{ "b" : 2, "a" : 1 }"#)
        );
    }
}
