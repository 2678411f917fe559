//! Process-wide memory settings, applied first thing by every binary.

/// glibc gives each thread that meets contention in malloc an arena of its
/// own and seldom hands their memory back. With tokio's blocking pool
/// moving pages of records between threads, a long export or import then
/// grows with the project; two arenas keep it flat (`bench/run.py`
/// measures it).
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; it is called before the
    // process starts any thread of its own.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
