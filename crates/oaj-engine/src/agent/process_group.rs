//! The process group of a running command, and the signals sent to it.

use std::sync::atomic::{AtomicBool, Ordering};

/// The process group that a command's child leads (spawned with `process_group(0)`, so the group
/// id is the child's pid). Signals go to every process in it, grandchildren included.
///
/// Dropping an armed group sends SIGKILL to it, so that a dropped attempt leaves no process
/// behind.
pub(crate) struct ProcessGroup {
    pgid: libc::pid_t,
    is_armed: AtomicBool,
}

impl ProcessGroup {
    /// Wraps the group led by `leader_pid`.
    ///
    /// # Panics
    ///
    /// If `leader_pid` is 0 or 1 or does not fit a `pid_t`: `killpg` would then signal the
    /// caller's own group or init's, and a spawned child never has such a pid.
    pub(crate) fn new(leader_pid: u32) -> ProcessGroup {
        let pgid = libc::pid_t::try_from(leader_pid).expect("a pid fits in pid_t");
        assert!(pgid > 1, "a spawned child's pid is above 1, got {pgid}");
        ProcessGroup {
            pgid,
            is_armed: AtomicBool::new(true),
        }
    }

    /// Sends `signal` to every process in the group. A group that no longer exists is not an
    /// error: its processes are already gone.
    pub(crate) fn signal(&self, signal: libc::c_int) {
        // SAFETY: killpg only reads its two integer arguments, and `new` checked that the
        // group id is above 1.
        let result = unsafe { libc::killpg(self.pgid, signal) };
        if result == 0 {
            tracing::debug!(pgid = self.pgid, signal, "signalled process group");
            return;
        }
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::ESRCH) {
            tracing::warn!(pgid = self.pgid, signal, error = %error, "signalling process group failed");
        }
    }

    /// Sends SIGKILL to the group and disarms the drop guard.
    ///
    /// Called once the leader has exited, to stop what it left running. NOTE: the leader has
    /// been reaped by then. If no other member kept the group id alive, the kernel could in
    /// principle have given that id to a new group in the few instructions since the reap.
    pub(crate) fn kill_and_disarm(&self) {
        self.signal(libc::SIGKILL);
        self.is_armed.store(false, Ordering::Release);
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if self.is_armed.load(Ordering::Acquire) {
            self.signal(libc::SIGKILL);
        }
    }
}
