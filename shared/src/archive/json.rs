//! Checks on one JSON record from a stranger, before anything stores it.
//!
//! Every imported byte passes through here, so the check is one pass over the
//! record: syntax and nesting depth together, after the UTF-8 check. Only a
//! refused record is parsed again, by serde_json, to say precisely what is
//! wrong with it.

use super::Limits;

/// Validates one top-level record: UTF-8, size, depth, syntax, and an object
/// at the top. Returns the record without surrounding whitespace.
pub fn check_record<'a>(raw: &'a [u8], limits: &Limits) -> Result<&'a [u8], String> {
    let record = raw.trim_ascii();
    if record.len() > limits.max_record_bytes {
        return Err(format!(
            "record of {} bytes is over the limit of {} bytes",
            record.len(),
            limits.max_record_bytes
        ));
    }
    if std::str::from_utf8(record).is_err() {
        return Err("invalid UTF-8".into());
    }
    if record.first() != Some(&b'{') {
        return Err("a record must be a JSON object".into());
    }
    match validate(record, limits.max_json_depth) {
        Ok(()) => Ok(record),
        Err(Refused::TooDeep) => Err(format!(
            "JSON nested deeper than {} levels",
            limits.max_json_depth
        )),
        Err(Refused::Syntax { at }) => Err(describe_syntax_error(record, at)),
    }
}

fn describe_syntax_error(record: &[u8], at: usize) -> String {
    match serde_json::from_slice::<serde::de::IgnoredAny>(record) {
        Err(err) => format!("invalid JSON: {err}"),
        Ok(_) => format!("invalid JSON at byte {}", at + 1),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Refused {
    Syntax { at: usize },
    TooDeep,
}

/// An RFC 8259 JSON text (one value, whitespace around it), with objects and
/// arrays nested at most `max_depth` deep. Expects valid UTF-8.
fn validate(json: &[u8], max_depth: usize) -> Result<(), Refused> {
    let mut cursor = Cursor { json, pos: 0 };
    // true for an object, false for an array.
    let mut open: Vec<bool> = Vec::with_capacity(16);
    cursor.skip_whitespace();
    loop {
        // A value starts here.
        match cursor.peek()? {
            b'{' | b'[' => {
                let is_object = cursor.peek()? == b'{';
                if open.len() == max_depth {
                    return Err(Refused::TooDeep);
                }
                cursor.pos += 1;
                cursor.skip_whitespace();
                let close = if is_object { b'}' } else { b']' };
                if cursor.peek()? == close {
                    cursor.pos += 1;
                } else {
                    open.push(is_object);
                    if is_object {
                        cursor.key()?;
                    }
                    continue;
                }
            }
            b'"' => cursor.string()?,
            b't' => cursor.literal(b"true")?,
            b'f' => cursor.literal(b"false")?,
            b'n' => cursor.literal(b"null")?,
            b'-' | b'0'..=b'9' => cursor.number()?,
            _ => return Err(cursor.refused()),
        }
        // A value ended: close containers until one wants another value.
        loop {
            cursor.skip_whitespace();
            let Some(&is_object) = open.last() else {
                return match cursor.pos == json.len() {
                    true => Ok(()),
                    false => Err(cursor.refused()),
                };
            };
            match cursor.peek()? {
                b',' => {
                    cursor.pos += 1;
                    cursor.skip_whitespace();
                    if is_object {
                        cursor.key()?;
                    }
                    break;
                }
                b'}' if is_object => {
                    cursor.pos += 1;
                    open.pop();
                }
                b']' if !is_object => {
                    cursor.pos += 1;
                    open.pop();
                }
                _ => return Err(cursor.refused()),
            }
        }
    }
}

struct Cursor<'a> {
    json: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn refused(&self) -> Refused {
        Refused::Syntax { at: self.pos }
    }

    fn peek(&self) -> Result<u8, Refused> {
        self.json
            .get(self.pos)
            .copied()
            .ok_or_else(|| self.refused())
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.json.get(self.pos) {
            self.pos += 1;
        }
    }

    /// `"name"` then `:` and the whitespace before the value.
    fn key(&mut self) -> Result<(), Refused> {
        if self.peek()? != b'"' {
            return Err(self.refused());
        }
        self.string()?;
        self.skip_whitespace();
        if self.peek()? != b':' {
            return Err(self.refused());
        }
        self.pos += 1;
        self.skip_whitespace();
        Ok(())
    }

    fn string(&mut self) -> Result<(), Refused> {
        self.pos += 1;
        loop {
            let rest = &self.json[self.pos..];
            let Some(stop) = string_stop(rest) else {
                self.pos = self.json.len();
                return Err(self.refused());
            };
            self.pos += stop;
            match rest[stop] {
                b'"' => {
                    self.pos += 1;
                    return Ok(());
                }
                b'\\' => {
                    self.pos += 1;
                    match self.peek()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.pos += 1,
                        b'u' => {
                            self.pos += 1;
                            for _ in 0..4 {
                                if !self.peek()?.is_ascii_hexdigit() {
                                    return Err(self.refused());
                                }
                                self.pos += 1;
                            }
                        }
                        _ => return Err(self.refused()),
                    }
                }
                // A raw control character.
                _ => return Err(self.refused()),
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), Refused> {
        if self.json[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(self.refused())
        }
    }

    fn number(&mut self) -> Result<(), Refused> {
        if self.peek()? == b'-' {
            self.pos += 1;
        }
        match self.peek()? {
            b'0' => self.pos += 1,
            b'1'..=b'9' => self.digits(),
            _ => return Err(self.refused()),
        }
        if self.json.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.json.get(self.pos) {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.json.get(self.pos) {
                self.pos += 1;
            }
            self.some_digits()?;
        }
        Ok(())
    }

    fn digits(&mut self) {
        while self.json.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
    }

    fn some_digits(&mut self) -> Result<(), Refused> {
        if !self.peek()?.is_ascii_digit() {
            return Err(self.refused());
        }
        self.digits();
        Ok(())
    }
}

/// Where a string's plain run ends: the first quote, backslash or raw
/// control character. Most of a record's bytes are in strings, so they are
/// looked at eight at a time (each test below flags, in its lowest flagged
/// byte, the first byte that matches; higher flags may be false).
fn string_stop(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero_in = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let x = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let flagged = zero_in(x ^ (ONES * u64::from(b'"')))
            | zero_in(x ^ (ONES * u64::from(b'\\')))
            | (x.wrapping_sub(ONES * 0x20) & !x & HIGHS);
        if flagged != 0 {
            return Some(offset + flagged.trailing_zeros() as usize / 8);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|at| offset + at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_strings_run_stops_at_its_first_quote_backslash_or_control_byte() {
        let plain = |b: u8| b != b'"' && b != b'\\' && b >= 0x20;
        for len in 0..40 {
            for at in 0..=len {
                for stop in [b'"', b'\\', 0x00, 0x1f, 0x0a] {
                    for filler in [b'a', 0x7f, 0x80, 0xff, 0x21, 0x5b, 0x5d] {
                        let mut bytes = vec![filler; len];
                        if at < len {
                            bytes[at] = stop;
                        }
                        let expected = bytes.iter().position(|&b| !plain(b));
                        assert_eq!(string_stop(&bytes), expected, "{bytes:?}");
                    }
                }
            }
        }
    }
    use proptest::prelude::*;

    fn serde_accepts(json: &[u8]) -> bool {
        serde_json::from_slice::<serde::de::IgnoredAny>(json).is_ok()
    }

    #[test]
    fn depth_ignores_brackets_in_strings() {
        assert_eq!(validate(br#"{"a":"[[[{{{","b":[1,{"c":[]}]}"#, 4), Ok(()));
        assert_eq!(validate(br#"{"a":"\"[[["}"#, 1), Ok(()));
        assert_eq!(
            validate(br#"{"b":[1,{"c":[{}]}]}"#, 4),
            Err(Refused::TooDeep)
        );
        assert_eq!(validate(br#"{"b":[1,{"c":[{}]}]}"#, 5), Ok(()));
    }

    #[test]
    fn accepts_what_json_allows() {
        for ok in [
            r#"{}"#,
            r#" { "a" : [ 1 , -2.5e+3 , 0 , 0.0 , 1E9 , true , false , null , "" ] } "#,
            r#"{"s":"\" \\ \/ \b \f \n \r \t \u00e9 \uD83D\uDE00 é 😀"}"#,
            r#"{"a":{"b":{"c":[[],[{}]]}}}"#,
        ] {
            assert_eq!(validate(ok.as_bytes(), 64), Ok(()), "{ok}");
            assert!(serde_accepts(ok.as_bytes()), "{ok}");
        }
    }

    #[test]
    fn refuses_what_json_does_not() {
        for bad in [
            "",
            "{",
            "{]",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "{,}",
            "[1,]",
            "{} {}",
            "{}x",
            "{\"a\":01}",
            "{\"a\":1.}",
            "{\"a\":.5}",
            "{\"a\":1e}",
            "{\"a\":-}",
            "{\"a\":+1}",
            "{\"a\":tru}",
            "{\"a\":nul}",
            "{\"a\":\"\\x\"}",
            "{\"a\":\"\\u12g4\"}",
            "{\"a\":\"tab\there\"}",
            "{\"a\":\"open}",
            "{a:1}",
            "{'a':1}",
            "{\"a\":1 \"b\":2}",
            "{\"a\":NaN}",
            "{\"a\":[1 2]}",
        ] {
            assert!(
                matches!(validate(bad.as_bytes(), 64), Err(Refused::Syntax { .. })),
                "{bad:?}"
            );
            assert!(!serde_accepts(bad.as_bytes()), "{bad:?}");
        }
    }

    #[test]
    fn records_are_checked() {
        let limits = Limits::default();
        assert_eq!(
            check_record(b" {\"a\":1}\r", &limits).unwrap(),
            b"{\"a\":1}"
        );
        assert!(check_record(b"[1]", &limits)
            .unwrap_err()
            .contains("object"));
        // The message comes from serde_json, with the position.
        let eof = check_record(b"{\"a\":", &limits).unwrap_err();
        assert!(eof.starts_with("invalid JSON: EOF while parsing"), "{eof}");
        assert!(check_record(b"{\"a\":\"\xff\"}", &limits)
            .unwrap_err()
            .contains("UTF-8"));
        let deep = format!(
            "{}{}",
            "{\"a\":".repeat(100),
            "1".to_owned() + &"}".repeat(100)
        );
        assert!(check_record(deep.as_bytes(), &limits)
            .unwrap_err()
            .contains("deeper"));
        let small = Limits {
            max_record_bytes: 4,
            ..Limits::default()
        };
        assert!(check_record(b"{\"a\":1}", &small)
            .unwrap_err()
            .contains("over the limit"));
    }

    /// Text built from JSON's own tokens, most of it nearly valid.
    fn json_like() -> impl Strategy<Value = String> {
        let token = prop::sample::select(vec![
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            "\"",
            "\"k\"",
            "\"v\\\"x\"",
            "\\u00e9",
            "\\",
            "1",
            "-0",
            "0",
            "01",
            "2.5",
            "1e5",
            "1E-2",
            ".",
            "e",
            "true",
            "false",
            "null",
            "nul",
            " ",
            "\n",
            "\t",
            "x",
            "é",
            "\u{1}",
        ]);
        prop::collection::vec(token, 0..24).prop_map(|tokens| tokens.concat())
    }

    /// Valid JSON values, nested a little.
    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(6, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(".{0,6}", inner, 0..6)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn agrees_with_serde_json_on_near_json(text in json_like()) {
            // Deep enough that only syntax decides (the text has < 24 tokens).
            let ours = validate(text.as_bytes(), 64).is_ok();
            prop_assert_eq!(ours, serde_accepts(text.as_bytes()), "{:?}", text);
        }

        #[test]
        fn accepts_every_serialized_value(value in json_value(), pretty in any::<bool>()) {
            let text = match pretty {
                true => serde_json::to_string_pretty(&value).unwrap(),
                false => serde_json::to_string(&value).unwrap(),
            };
            prop_assert_eq!(validate(text.as_bytes(), 64), Ok(()), "{}", text);
        }
    }
}
