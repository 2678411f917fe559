//! The process's runtime, set up the same way by every binary: the local
//! server and each Lambda function. Memory must not grow with the project,
//! and threads are memory.
//!
//! Two kinds of blocking work run beside the async tasks:
//! - short calls (a database transaction, a file read or write), on tokio's
//!   blocking pool, capped at [`BLOCKING_THREADS`];
//! - the streams that last a whole job (compressing an export, reading an
//!   archive), each on a thread of its own from [`spawn_thread`]. They wait
//!   on the async side, which waits on short calls: in the capped pool they
//!   could take every thread and leave none for the calls they wait on.
//!
//! tokio's default pool grows to 512 threads whenever short calls overlap,
//! and keeps them for a while: a long import ended with more threads, and a
//! higher peak RSS, than a short one (`bench/run.py`'s flatness line).

use std::future::Future;

use tokio::sync::oneshot;

use crate::{Error, Result};

/// Threads for short blocking calls. One job has at most two in flight at
/// once (a store call and a blob read or write); several jobs and HTTP
/// requests queue for them, which is what bounds the threads. More made
/// imports no faster on two cores.
pub const BLOCKING_THREADS: usize = 2;

/// Runs `main` on the process's runtime, after the allocator settings that
/// must be made before any thread starts.
pub fn block_on<F: Future>(main: F) -> F::Output {
    limit_malloc_arenas();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
        .expect("the tokio runtime starts")
        .block_on(main)
}

/// glibc gives each thread that meets contention in malloc an arena of its
/// own and seldom hands their memory back. With pages of records moving
/// between threads, a long export or import then grows with the project;
/// two arenas keep it flat (`bench/run.py` measures it).
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; `block_on` calls it before
    // the runtime starts any thread.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Work that blocks for as long as a job lasts, on a thread of its own (see
/// the module's notes). Must be called from within the runtime.
pub fn spawn_thread<T: Send + 'static>(
    name: &'static str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Thread<T> {
    let (done, result) = oneshot::channel();
    let runtime = tokio::runtime::Handle::current();
    let started = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let _runtime = runtime.enter();
            let _ = done.send(work());
        });
    if let Err(err) = started {
        tracing::error!(thread = name, error = %err, "cannot start a thread");
    }
    Thread { name, result }
}

/// A thread started by [`spawn_thread`].
pub struct Thread<T> {
    name: &'static str,
    result: oneshot::Receiver<T>,
}

impl<T> Thread<T> {
    /// Waits for the thread's result.
    pub async fn join(self) -> Result<T> {
        self.result.await.map_err(|_| {
            Error::Internal(format!(
                "the {} thread ended without a result (it did not start, or it panicked)",
                self.name
            ))
        })
    }
}

/// Raises the process's open-file limit to its hard limit (a server's
/// connections are descriptors; the usual soft limit of 1,024 is what an
/// async server outgrows first). Returns the limit before and after.
#[cfg(unix)]
pub fn raise_open_file_limit() -> std::io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the call to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: `limit` is a valid rlimit; raising the soft limit up to
        // the hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok((before, limit.rlim_cur))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// More job-long threads than the pool has threads, each waiting on
    /// short blocking calls: none of them starves.
    #[test]
    fn job_threads_never_take_the_pool_from_short_calls() {
        let jobs = BLOCKING_THREADS as u64 * 3;
        let total = block_on(async {
            let jobs: Vec<_> = (0..jobs)
                .map(|job| {
                    let runtime = tokio::runtime::Handle::current();
                    spawn_thread("test-job", move || {
                        (0..20)
                            .map(|call| {
                                runtime
                                    .block_on(tokio::task::spawn_blocking(move || job * call))
                                    .unwrap()
                            })
                            .sum::<u64>()
                    })
                })
                .collect();
            let mut total = 0;
            for job in jobs {
                total += job.join().await.unwrap();
            }
            total
        });
        assert_eq!(total, (0..jobs).sum::<u64>() * (0..20).sum::<u64>());
    }

    #[test]
    fn a_panicking_thread_is_an_error_not_a_hang() {
        let joined = block_on(async {
            spawn_thread("test-panic", || -> u32 { panic!("on purpose") })
                .join()
                .await
        });
        assert!(matches!(joined, Err(Error::Internal(message)) if message.contains("test-panic")));
    }
}
