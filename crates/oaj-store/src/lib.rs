//! Durable storage for oaj: the [`Store`] trait, its records, the embedded SQLite
//! implementation and the PostgreSQL one. All SQL lives in this crate.
#![warn(missing_docs)]

pub mod error;
pub mod model;
pub mod store;

pub use error::StoreError;
pub use model::*;
pub use store::Store;
pub mod postgres;
pub mod sqlite;

pub use postgres::{PostgresDurability, PostgresOptions, PostgresStore};
pub use sqlite::{SqliteDurability, SqliteOptions, SqliteStore};
