//! Percent-encoding as RFC 3986 has it, for the URLs this service signs
//! (its own blob URLs and presigned S3 URLs): the unreserved characters
//! stay, everything else is escaped, and a path keeps its `/`.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
const PATH: &AsciiSet = &COMPONENT.remove(b'/');

/// One query-string name or value, or one path segment.
pub fn encode_component(text: &str) -> String {
    utf8_percent_encode(text, COMPONENT).to_string()
}

/// A path whose `/` separate its segments.
pub fn encode_path(text: &str) -> String {
    utf8_percent_encode(text, PATH).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreserved_characters_stay_and_paths_keep_their_slashes() {
        assert_eq!(encode_component("a-b.c_d~e f/g+h"), "a-b.c_d~e%20f%2Fg%2Bh");
        assert_eq!(encode_path("a b/c+d"), "a%20b/c%2Bd");
    }
}
