//! Checks on one JSON record from a stranger, before anything stores it.

use super::Limits;

/// Deepest nesting of objects and arrays in `json`, stopping early once past
/// `cap`. Strings are skipped, so brackets inside them do not count.
pub fn max_depth(json: &[u8], cap: usize) -> usize {
    let mut depth = 0usize;
    let mut deepest = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in json {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > deepest {
                    deepest = depth;
                    if deepest > cap {
                        return deepest;
                    }
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

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
    if max_depth(record, limits.max_json_depth) > limits.max_json_depth {
        return Err(format!(
            "JSON nested deeper than {} levels",
            limits.max_json_depth
        ));
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(record)
        .map_err(|err| format!("invalid JSON: {err}"))?;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_ignores_brackets_in_strings() {
        assert_eq!(max_depth(br#"{"a":"[[[{{{","b":[1,{"c":[]}]}"#, 100), 4);
        assert_eq!(max_depth(br#"{"a":"\"[[["}"#, 100), 1);
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
        assert!(check_record(b"{\"a\":", &limits)
            .unwrap_err()
            .contains("invalid JSON"));
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
}
