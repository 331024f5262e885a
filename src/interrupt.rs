//! Ctrl-C, one listener per process.
//!
//! [`listen`] replaces the default action of SIGINT (ending the process at once, halfway
//! through a write) with a counter. Commands that run experiments call it first thing, so a
//! Ctrl-C is never lost in the gap before a phase starts waiting for one; each phase then
//! races its work against [`after`]: `after(0)` ends at once if a Ctrl-C came at any time
//! before, `after(n)` waits for a Ctrl-C beyond the first `n` (for "Ctrl-C again").

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

struct State {
    count: AtomicUsize,
    notify: tokio::sync::Notify,
}

static STATE: OnceLock<State> = OnceLock::new();

fn state() -> &'static State {
    STATE.get_or_init(|| State {
        count: AtomicUsize::new(0),
        notify: tokio::sync::Notify::new(),
    })
}

/// Start counting Ctrl-Cs (idempotent). Needs a tokio runtime.
pub fn listen() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        // Registered now, not when the task first runs: a Ctrl-C right after this counts.
        let signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt());
        tokio::spawn(async move {
            let Ok(mut signal) = signal else { return };
            while signal.recv().await.is_some() {
                state().count.fetch_add(1, Ordering::SeqCst);
                state().notify.notify_waiters();
            }
        });
    });
}

/// How many Ctrl-Cs came so far.
pub fn count() -> usize {
    state().count.load(Ordering::SeqCst)
}

/// Whether a Ctrl-C came.
pub fn seen() -> bool {
    count() > 0
}

/// Ends when more than `n` Ctrl-Cs have come (at once if they already have).
pub async fn after(n: usize) {
    listen();
    loop {
        let notified = state().notify.notified();
        tokio::pin!(notified);
        // Registered before the check, so a Ctrl-C between the two is not missed.
        notified.as_mut().enable();
        if count() > n {
            return;
        }
        notified.await;
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_ctrl_c_before_waiting_is_not_lost() {
        super::listen();
        let before = super::count();
        unsafe { libc::raise(libc::SIGINT) };
        tokio::time::timeout(std::time::Duration::from_secs(5), super::after(before))
            .await
            .expect("the Ctrl-C raised before waiting is seen");
        assert!(super::seen());
        // The next one is waited for.
        let pending = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            super::after(super::count()),
        )
        .await;
        assert!(pending.is_err());
    }
}
