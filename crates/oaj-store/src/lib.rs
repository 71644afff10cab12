//! Durable storage for oaj: the [`Store`] trait, its records, and the embedded SQLite
//! implementation. All SQL lives in this crate.
#![warn(missing_docs)]

pub mod error;
pub mod model;
pub mod store;

pub use error::StoreError;
pub use model::*;
pub use store::Store;
pub mod sqlite;

pub use sqlite::{SqliteDurability, SqliteOptions, SqliteStore};
