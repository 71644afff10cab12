//! Errors on opening a SQLite file. These are specific to SQLite and run only against it.

use std::time::Duration;

use oaj_store::{SqliteOptions, SqliteStore, StoreError};

#[test]
fn open_missing_folder_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-folder").join("oaj.db");
    let error = SqliteStore::open(&path).err().expect("opening fails");
    let StoreError::Open { message, .. } = &error else {
        panic!("expected StoreError::Open, got {error:?}");
    };
    assert!(message.contains("no-such-folder"), "{message}");
    assert!(message.contains("does not exist"), "{message}");
}

#[test]
fn open_garbage_file_is_not_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.db");
    let garbage: Vec<u8> = (0..8192u32).map(|n| (n * 31 % 251) as u8).collect();
    std::fs::write(&path, garbage).unwrap();
    let error = SqliteStore::open(&path).err().expect("opening fails");
    let StoreError::Open {
        path: shown,
        message,
    } = &error
    else {
        panic!("expected StoreError::Open, got {error:?}");
    };
    assert!(shown.contains("notes.db"), "{shown}");
    assert!(
        message.contains("is not an oaj database or is corrupt"),
        "{message}"
    );
}

#[test]
fn open_locked_file_is_busy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("oaj.db");
    drop(SqliteStore::open(&path).expect("a new store opens"));

    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let options = SqliteOptions {
        busy_timeout: Duration::from_millis(200),
        ..SqliteOptions::default()
    };
    let error = SqliteStore::open_with(&path, options)
        .err()
        .expect("opening fails");
    let StoreError::Busy(message) = &error else {
        panic!("expected StoreError::Busy, got {error:?}");
    };
    assert!(message.contains("oaj.db"), "{message}");
    other.execute_batch("ROLLBACK").unwrap();
}

#[test]
fn open_newer_schema_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("oaj.db");
    drop(SqliteStore::open(&path).expect("a new store opens"));
    let other = rusqlite::Connection::open(&path).unwrap();
    other
        .execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (999, 0)",
            [],
        )
        .unwrap();
    drop(other);
    let error = SqliteStore::open(&path).err().expect("opening fails");
    assert!(error.to_string().contains("upgrade oaj"), "{error}");
}

#[test]
fn open_twice_applies_migrations_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("oaj.db");
    drop(SqliteStore::open(&path).expect("a new store opens"));
    drop(SqliteStore::open(&path).expect("the store opens again"));
}

/// Regression: two processes opening a new file at once used to fail one of them with "database
/// is busy", because switching to WAL reports a held lock at once instead of waiting.
#[test]
fn open_new_file_concurrently_succeeds() {
    for _ in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oaj.db");
        let openers: Vec<_> = (0..4)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || SqliteStore::open(&path).map(drop))
            })
            .collect();
        for opener in openers {
            let opened = opener.join().expect("opener thread");
            assert!(opened.is_ok(), "{:?}", opened.err());
        }
    }
}
