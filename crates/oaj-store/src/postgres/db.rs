//! Statement execution shared by reads and transactions: every statement is prepared once per
//! connection and then reused from the pool's statement cache.

use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};

use crate::error::StoreError;

/// The arguments of one statement.
pub(crate) type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

/// A connection to run statements on: a pooled client, or an open transaction.
#[derive(Clone, Copy)]
pub(crate) enum Db<'a> {
    /// A pooled connection: in autocommit mode for reads, or in a transaction that the group
    /// writer began and ends with statements of its own.
    Client(&'a deadpool_postgres::Client),
    /// An open transaction.
    Tx(&'a deadpool_postgres::Transaction<'a>),
}

impl Db<'_> {
    /// Prepares a statement on this connection, unless the connection's cache already has it.
    pub(crate) async fn prepare(&self, sql: &str) -> Result<(), StoreError> {
        self.statement(sql).await.map(drop)
    }

    async fn statement(&self, sql: &str) -> Result<Statement, StoreError> {
        let statement = match self {
            Db::Client(client) => client.prepare_cached(sql).await?,
            Db::Tx(tx) => tx.prepare_cached(sql).await?,
        };
        Ok(statement)
    }

    /// Runs statements given as text, with no parameters, such as savepoint commands.
    pub(crate) async fn batch_execute(&self, sql: &str) -> Result<(), StoreError> {
        match self {
            Db::Client(client) => client.batch_execute(sql).await?,
            Db::Tx(tx) => tx.batch_execute(sql).await?,
        }
        Ok(())
    }

    /// Runs a statement and returns every row.
    pub(crate) async fn query(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Vec<Row>, StoreError> {
        let statement = self.statement(sql).await?;
        let rows = match self {
            Db::Client(client) => client.query(&statement, params).await?,
            Db::Tx(tx) => tx.query(&statement, params).await?,
        };
        Ok(rows)
    }

    /// Runs a statement and returns its first row, if any.
    pub(crate) async fn query_opt(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Option<Row>, StoreError> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }

    /// Runs a statement and returns the number of rows it changed.
    pub(crate) async fn execute(&self, sql: &str, params: Params<'_>) -> Result<u64, StoreError> {
        let statement = self.statement(sql).await?;
        let count = match self {
            Db::Client(client) => client.execute(&statement, params).await?,
            Db::Tx(tx) => tx.execute(&statement, params).await?,
        };
        Ok(count)
    }

    /// Runs a statement that returns one row of one column, such as a count.
    pub(crate) async fn query_value<T>(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<T, StoreError>
    where
        T: for<'r> tokio_postgres::types::FromSql<'r>,
    {
        let row = self
            .query_opt(sql, params)
            .await?
            .ok_or_else(|| StoreError::Database(format!("statement returned no row: {sql}")))?;
        Ok(row.try_get(0)?)
    }
}
