//! Crash points for the kill tests: with `CRASH_AT=<name>` in its
//! environment the process aborts at that step, as a process killed between
//! two writes stops. Unset (always, in service), a point costs one read of
//! a cached value.

use std::sync::OnceLock;

pub fn point(name: &str) {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    if AT.get_or_init(|| std::env::var("CRASH_AT").ok()).as_deref() == Some(name) {
        eprintln!("crash point {name}: aborting");
        std::process::abort();
    }
}
