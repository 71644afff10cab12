//! Options and helpers shared by the commands that open a database.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use oaj_core::SystemClock;
use oaj_engine::agent::AgentRegistry;
use oaj_engine::{Engine, EngineConfig};
use oaj_store::sqlite::SqliteStore;
use oaj_store::PostgresStore;
use oaj_store::Store;

/// Database location: an embedded SQLite file, or a PostgreSQL server.
#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// SQLite database file; created if missing. Default: $XDG_DATA_HOME/oaj/oaj.db, or
    /// ~/.local/share/oaj/oaj.db.
    // Global so that `oaj jobs list --db PATH` works as well as `oaj jobs --db PATH list`.
    #[arg(long, env = "OAJ_DB", value_name = "PATH", global = true)]
    pub db: Option<PathBuf>,
    /// PostgreSQL database shared by many oaj processes, such as
    /// postgres://oaj@db.example:5432/oaj. Used instead of --db when given.
    #[arg(
        long,
        env = "OAJ_DATABASE_URL",
        value_name = "URL",
        value_parser = clap::builder::NonEmptyStringValueParser::new(),
        conflicts_with = "db",
        global = true
    )]
    pub database: Option<String>,
}

impl DbArgs {
    /// Returns the database path: the flag, the environment, or the default location.
    pub fn path(&self) -> anyhow::Result<PathBuf> {
        if let Some(path) = &self.db {
            return Ok(path.clone());
        }
        let data_home = match std::env::var_os("XDG_DATA_HOME").filter(|value| !value.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => {
                let home = std::env::var_os("HOME").context(
                    "neither --db, OAJ_DB, XDG_DATA_HOME nor HOME is set: pass --db PATH",
                )?;
                PathBuf::from(home).join(".local/share")
            }
        };
        let dir = data_home.join("oaj");
        std::fs::create_dir_all(&dir).with_context(|| {
            format!(
                "cannot create the data folder {}: pass --db PATH",
                dir.display()
            )
        })?;
        Ok(dir.join("oaj.db"))
    }

    /// Opens the PostgreSQL store when `--database` is given, and otherwise the SQLite store at
    /// [`DbArgs::path`]. Returns the store and where it is, for logs (without a password).
    pub async fn open(&self) -> anyhow::Result<(Arc<dyn Store>, String)> {
        if let Some(url) = &self.database {
            let store = PostgresStore::connect(url)
                .await
                .context("cannot open the PostgreSQL store given by --database")?;
            let location = store.url_redacted().to_owned();
            return Ok((Arc::new(store), location));
        }
        let path = self.path()?;
        let store = SqliteStore::open(&path)?;
        Ok((Arc::new(store), path.display().to_string()))
    }
}

/// Settings of the workers a command runs.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Most attempts running at once (the global concurrency limit).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,
    /// Most jobs held at once.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub jobs_max: u32,
    /// Lease length in seconds: a job whose worker dies is run again this long after its last
    /// heartbeat.
    #[arg(long, default_value_t = 30.0, value_parser = positive_seconds)]
    pub lease_seconds: f64,
    /// Limit for one agent, as NAME=N; repeat for several agents.
    #[arg(long = "agent-limit", value_name = "NAME=N", value_parser = agent_limit)]
    pub agent_limits: Vec<(String, usize)>,
    /// Delete jobs that ended (completed, failed or cancelled) more than this many days ago, with
    /// their attempts, step runs and events. Fractions are allowed (0.5 is twelve hours). Without
    /// it, finished jobs are kept.
    #[arg(long, value_name = "DAYS", value_parser = retention_days)]
    pub retention_days: Option<f64>,
}

impl WorkerArgs {
    /// Builds the engine settings these flags describe.
    pub fn config(&self) -> EngineConfig {
        let lease = Duration::from_secs_f64(self.lease_seconds);
        EngineConfig {
            attempts_max: self.concurrency as usize,
            jobs_max: self.jobs_max as usize,
            lease,
            // Renew often enough that two missed heartbeats still leave the lease alive.
            heartbeat: (lease / 4).min(Duration::from_millis(500)),
            agent_limits: self.agent_limits.iter().cloned().collect(),
            retention: self
                .retention_days
                .map(|days| Duration::from_secs_f64(days * SECONDS_PER_DAY)),
            ..EngineConfig::default()
        }
    }
}

fn positive_seconds(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("invalid number of seconds {text:?}"))?;
    if (0.1..=86_400.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!(
            "{text} is out of range: expected seconds between 0.1 and 86400"
        ))
    }
}

const SECONDS_PER_DAY: f64 = 86_400.0;

/// Maximum retention, in days: a hundred years.
const RETENTION_DAYS_MAX: f64 = 36_500.0;

fn retention_days(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("invalid number of days {text:?}: expected a number such as 30"))?;
    // A retention under a second would delete a job in the moment it ends.
    if value * SECONDS_PER_DAY >= 1.0 && value <= RETENTION_DAYS_MAX {
        Ok(value)
    } else {
        Err(format!(
            "{text} is out of range: expected days between 0.0000116 (one second) and \
             {RETENTION_DAYS_MAX}"
        ))
    }
}

fn agent_limit(text: &str) -> Result<(String, usize), String> {
    let (name, limit) = text.split_once('=').ok_or_else(|| {
        format!("invalid agent limit {text:?}: expected NAME=N, such as classify=4")
    })?;
    let limit: usize = limit
        .parse()
        .map_err(|_| format!("invalid agent limit {text:?}: N must be a whole number"))?;
    if name.is_empty() || limit == 0 {
        return Err(format!(
            "invalid agent limit {text:?}: expected a name and a limit of at least 1"
        ));
    }
    Ok((name.to_owned(), limit))
}

/// Builds an engine over `store` with the built-in agents.
pub fn engine(store: Arc<dyn Store>, config: EngineConfig) -> Engine {
    Engine::new(
        store,
        AgentRegistry::with_builtins(),
        Arc::new(SystemClock),
        config,
    )
}

/// The text of a `--input` value and where it came from.
pub struct InputText {
    /// `--input`, or the path of the file that `@FILE` named.
    pub source: String,
    /// The JSON text.
    pub content: String,
}

/// Reads a `--input` value: JSON text, or `@FILE` for a file's contents. Fails only when the
/// file cannot be read.
pub fn input_text(text: &str) -> anyhow::Result<InputText> {
    match text.strip_prefix('@') {
        Some(path) => Ok(InputText {
            source: path.to_owned(),
            content: std::fs::read_to_string(path)
                .with_context(|| format!("cannot read input file {path}"))?,
        }),
        None => Ok(InputText {
            source: "--input".to_owned(),
            content: text.to_owned(),
        }),
    }
}

/// Parses the JSON of a `--input` value.
pub fn input_parse(input: &InputText) -> anyhow::Result<serde_json::Value> {
    serde_json::from_str(&input.content).with_context(|| {
        format!(
            "invalid JSON in {}: pass a JSON object such as '{{\"name\": \"value\"}}'",
            input.source
        )
    })
}
