//! API tests: each starts the real server on 127.0.0.1:0 over a temporary SQLite file and drives
//! it over HTTP.

mod auth;
mod dependencies;
mod events;
mod jobs;
mod pagination;
mod shutdown;
mod support;
mod workers;
mod workflows;
