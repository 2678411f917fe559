//! JSON read and edited as written. Records and `tree/project.json` are
//! kept byte for byte; where they must be read as a whole (a member
//! replaced, a record's identity) it happens here without a float round
//! trip: `123456789012345678901234567890` stays itself, `1.10` stays
//! `1.10`, `1e999999` is a number like any other, and duplicate keys stay.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// An object's members in order, duplicates kept, keys and values as
/// written. Keys are never decoded here: an escape no string can hold (an
/// unpaired surrogate, `"\ud800"`) is a key like any other to an edit.
pub fn members(object: &str) -> serde_json::Result<Vec<(&RawValue, &RawValue)>> {
    struct Members;

    impl<'de> Visitor<'de> for Members {
        type Value = Vec<(&'de RawValue, &'de RawValue)>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(key) = map.next_key::<&'de RawValue>()? {
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

/// A key as written, decoded; `None` where no string can hold it.
pub fn key_text(key: &RawValue) -> Option<std::borrow::Cow<'_, str>> {
    let written = key.get();
    let inner = written.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        return Some(std::borrow::Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(written)
        .ok()
        .map(std::borrow::Cow::Owned)
}

/// Whether a key as written names `name` (in any of its spellings).
pub fn key_is(key: &RawValue, name: &str) -> bool {
    key_text(key).is_some_and(|text| text == name)
}

/// An object written from its members (keys and values as JSON text), in
/// order, compactly.
pub fn object<'a>(members: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::from("{");
    for (i, (key, value)) in members.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(key);
        out.push(':');
        out.push_str(value.trim());
    }
    out.push('}');
    out
}

/// `object` with the members named in `updates` set to their values (JSON
/// text): every member of that name replaced, or one added at the end.
/// Every other member stays as written, its key too.
pub fn with_members(object_text: &str, updates: &[(&str, String)]) -> serde_json::Result<String> {
    let existing = members(object_text)?;
    let mut out: Vec<(String, &str)> = existing
        .iter()
        .map(|(key, value)| {
            let updated = updates.iter().find(|(name, _)| key_is(key, name));
            (
                key.get().to_owned(),
                updated.map_or(value.get(), |(_, v)| v.as_str()),
            )
        })
        .collect();
    for (name, value) in updates {
        if !existing.iter().any(|(key, _)| key_is(key, name)) {
            out.push((serde_json::Value::from(*name).to_string(), value.as_str()));
        }
    }
    Ok(object(out.iter().map(|(k, v)| (k.as_str(), *v))))
}

/// JSON with object keys sorted and strings in one spelling, numbers and
/// literals as written: two spellings of one record give the same text,
/// two records differing anywhere (past a float's precision too) do not.
pub fn canonical(json: &str, out: &mut impl FnMut(&[u8])) -> serde_json::Result<()> {
    let json = json.trim();
    match json.as_bytes().first() {
        Some(b'{') => {
            // One spelling of each key; one no string holds stays as written.
            let mut entries: Vec<(String, &RawValue)> = members(json)?
                .into_iter()
                .map(|(key, value)| {
                    let text = key_text(key).map_or_else(
                        || key.get().to_owned(),
                        |text| serde_json::Value::from(text.as_ref()).to_string(),
                    );
                    (text, value)
                })
                .collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            out(b"{");
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out(b",");
                }
                out(key.as_bytes());
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
            .map(|(k, v)| (key_text(k).unwrap().into_owned(), v.get().to_owned()))
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
        // Keys stay as written, an escaped spelling of a name is that name,
        // and a key no string can hold is never decoded.
        let text = r#"{"\ud800":1,"descr\u0069ption":"old","\u00e9":2}"#;
        let edited = with_members(text, &[("description", "\"new\"".into())]).unwrap();
        assert_eq!(
            edited,
            r#"{"\ud800":1,"descr\u0069ption":"new","\u00e9":2}"#
        );
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
