//! Schema migrations: numbered SQL files embedded in the binary, applied at connect under an
//! advisory lock, so that processes starting at once apply each migration exactly once.

use super::Names;
use crate::error::StoreError;

/// Every migration, in order; the number of each is its position plus one.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/postgres/0001_initial.sql"),
    include_str!("../../migrations/postgres/0002_workers.sql"),
    include_str!("../../migrations/postgres/0003_job_list_created.sql"),
    include_str!("../../migrations/postgres/0004_claim_queued.sql"),
    include_str!("../../migrations/postgres/0005_events_without_job_key.sql"),
    include_str!("../../migrations/postgres/0006_list_indexes_by_creation.sql"),
    include_str!("../../migrations/postgres/0007_attempts_and_step_runs_without_job_key.sql"),
];

const LOCK: &str = "SELECT pg_advisory_xact_lock($1, $2)";
const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version BIGINT PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)";
const SELECT_VERSION: &str = "SELECT COALESCE(MAX(version), 0) FROM schema_migrations";
const INSERT_VERSION: &str = "INSERT INTO schema_migrations (version) VALUES ($1)";

/// Applies the migrations the schema lacks, all in one transaction, so that a failed upgrade
/// leaves the schema as it was. Creates the schema first when `create_schema` is set.
///
/// Fails with [`StoreError::Open`] when the schema was written by a newer oaj.
pub(crate) async fn migrate(
    client: &mut tokio_postgres::Client,
    names: &Names,
    create_schema: bool,
    url_redacted: &str,
) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    tx.execute(LOCK, &[&names.lock_class_migrate, &names.lock_id])
        .await?;
    if create_schema {
        let sql = format!("CREATE SCHEMA IF NOT EXISTS {}", names.schema);
        tx.batch_execute(&sql).await?;
    }
    tx.batch_execute(CREATE_TABLE).await?;
    let stored: i64 = tx.query_one(SELECT_VERSION, &[]).await?.try_get(0)?;
    let known = i64::try_from(MIGRATIONS.len()).expect("the migration list is short");
    if stored > known {
        return Err(StoreError::Open {
            path: url_redacted.to_owned(),
            message: format!(
                "schema {} has version {stored}, but this build of oaj knows versions up to \
                 {known}: upgrade oaj to open it",
                names.schema
            ),
        });
    }

    let applied = usize::try_from(stored).map_err(|_| StoreError::Open {
        path: url_redacted.to_owned(),
        message: format!("schema_migrations contains the invalid version {stored}"),
    })?;
    for (version, sql) in (1_i64..).zip(MIGRATIONS).skip(applied) {
        tx.batch_execute(sql).await?;
        tx.execute(INSERT_VERSION, &[&version]).await?;
        tracing::info!(version, schema = %names.schema, "applied schema migration");
    }
    tx.commit().await?;
    Ok(())
}
