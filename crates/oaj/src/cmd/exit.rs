//! Exit codes of the `oaj` binary, documented in README.md.

/// The command did what was asked; for `oaj run`, the job completed.
pub const COMPLETED: u8 = 0;
/// `oaj validate`: a document is invalid. Other commands: oaj itself failed (database
/// unreadable, and so on).
pub const ERROR: u8 = 1;
/// Usage error, or a file that cannot be read.
pub const USAGE: u8 = 2;
/// `oaj run`: the workflow document or the input is invalid; nothing was run.
pub const INVALID: u8 = 3;
/// `oaj run`: the job failed.
pub const FAILED: u8 = 4;
/// `oaj run`: the job was cancelled.
pub const CANCELLED: u8 = 5;
/// `oaj run`: the job was paused, or left queued for a worker.
pub const NOT_FINISHED: u8 = 6;
/// Any command: the reader closed stdout before the output was written, as `head` does. A process
/// that SIGPIPE ends reports the same status (128 + 13).
pub const STDOUT_CLOSED: u8 = 141;
