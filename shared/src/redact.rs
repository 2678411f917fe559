//! User-supplied URLs can carry secrets: a presigned S3 URL holds its
//! credential and signature in the query string, a URL may hold a password
//! before the host. Whatever is shown or logged goes through here.

use std::borrow::Cow;

const SCHEMES: [&str; 2] = ["https://", "http://"];
const FILTERED: &str = "[FILTERED]";

/// The URL with its query string and user info replaced by `[FILTERED]`.
pub fn url(url: &str) -> String {
    let (scheme, rest) = match SCHEMES.iter().find_map(|s| {
        let head = url.get(..s.len())?;
        head.eq_ignore_ascii_case(s).then(|| url.split_at(s.len()))
    }) {
        Some(split) => split,
        None => ("", url),
    };
    let (before_query, query) = match rest.find(['?', '#']) {
        Some(at) => (&rest[..at], Some(&rest[at..at + 1])),
        None => (rest, None),
    };
    let authority_end = before_query.find('/').unwrap_or(before_query.len());
    let (authority, path) = before_query.split_at(authority_end);
    let host = match authority.rfind('@') {
        Some(at) => Cow::Owned(format!("{FILTERED}@{}", &authority[at + 1..])),
        None => Cow::Borrowed(authority),
    };
    let mut out = format!("{scheme}{host}{path}");
    if let Some(mark) = query {
        out.push_str(mark);
        out.push_str(FILTERED);
    }
    out
}

/// `text` with every URL in it redacted as `url` does.
pub fn text(text: &str) -> Cow<'_, str> {
    let lower = text.to_ascii_lowercase();
    if !SCHEMES.iter().any(|s| lower.contains(s)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut rest_lower = lower.as_str();
    while let Some(start) = SCHEMES.iter().filter_map(|s| rest_lower.find(s)).min() {
        out.push_str(&rest[..start]);
        let len = rest[start..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`'))
            .unwrap_or(rest.len() - start);
        out.push_str(&url(&rest[start..start + len]));
        rest = &rest[start + len..];
        rest_lower = &rest_lower[start + len..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// `text` without `secret`, wherever it stands and however the text was
/// cut: an answer's excerpt may end inside it, and then its start goes too.
/// The shortest tail taken for the start of a secret is four characters.
pub fn secret(text: &str, secret: &str) -> String {
    const SHORTEST_TAIL: usize = 4;
    if secret.is_empty() {
        return text.to_owned();
    }
    let mut out = text.replace(secret, FILTERED);
    let longest = secret.len().min(out.len());
    let cut = (SHORTEST_TAIL..longest)
        .rev()
        .filter(|n| out.is_char_boundary(out.len() - n) && secret.is_char_boundary(*n))
        .find(|n| out.ends_with(&secret[..*n]));
    if let Some(n) = cut {
        out.truncate(out.len() - n);
        out.push_str(FILTERED);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_and_user_info_are_filtered() {
        assert_eq!(
            url("https://b.s3.amazonaws.com/k.tar.gz?X-Amz-Credential=AKIA&X-Amz-Signature=ab"),
            "https://b.s3.amazonaws.com/k.tar.gz?[FILTERED]"
        );
        assert_eq!(
            url("http://user:pw@example.com/a#frag"),
            "http://[FILTERED]@example.com/a#[FILTERED]"
        );
        assert_eq!(url("https://example.com/a"), "https://example.com/a");
        assert_eq!(url("HTTPS://u@x/?q"), "HTTPS://[FILTERED]@x/?[FILTERED]");
    }

    #[test]
    fn every_url_in_a_text() {
        assert_eq!(
            text("fetching https://x/a?sig=1 failed: 403 from 'http://y/?t=2'"),
            "fetching https://x/a?[FILTERED] failed: 403 from 'http://y/?[FILTERED]'"
        );
        assert!(matches!(text("no urls here"), Cow::Borrowed(_)));
    }

    #[test]
    fn a_secret_goes_whole_or_cut() {
        let token = "glpat-0123456789abcdef";
        assert_eq!(
            secret(
                "Authorization: Bearer glpat-0123456789abcdef, again glpat-0123456789abcdef",
                token
            ),
            "Authorization: Bearer [FILTERED], again [FILTERED]"
        );
        assert_eq!(
            secret("echo: Bearer glpat-0123", token),
            "echo: Bearer [FILTERED]"
        );
        assert_eq!(secret("ends in glp", token), "ends in glp");
        assert_eq!(secret("nothing", ""), "nothing");
    }
}
