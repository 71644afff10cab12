//! A server under test, and request helpers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use oaj_core::SystemClock;
use oaj_engine::agent::AgentRegistry;
use oaj_engine::{Engine, EngineConfig};
use oaj_server::ServerConfig;
use oaj_store::{PostgresOptions, PostgresStore, SqliteStore, Store};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A running server with its engine.
pub struct TestServer {
    pub url: String,
    pub client: reqwest::Client,
    pub shutdown: CancellationToken,
    pub db: PathBuf,
    tasks: Vec<JoinHandle<()>>,
    _dir: Option<TempDir>,
}

/// Options of [`TestServer::start_with`].
#[derive(Default)]
pub struct Options {
    pub token: Option<String>,
    pub without_workers: bool,
    pub db: Option<PathBuf>,
    /// PostgreSQL server to use instead of the SQLite file, in a new schema of its own.
    pub postgres_url: Option<String>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> TestServer {
        let (dir, db) = match options.db {
            Some(db) => (None, db),
            None => {
                let dir = tempfile::tempdir().expect("a temporary folder can be created");
                let db = dir.path().join("oaj.db");
                (Some(dir), db)
            }
        };
        let store: Arc<dyn Store> = match &options.postgres_url {
            Some(url) => Arc::new(postgres_store(url).await),
            None => Arc::new(SqliteStore::open(&db).expect("the store opens")),
        };
        let config = EngineConfig {
            lease: Duration::from_secs(2),
            heartbeat: Duration::from_millis(200),
            poll: Duration::from_millis(50),
            maintenance: Duration::from_millis(200),
            shutdown_grace: Duration::from_millis(100),
            ..EngineConfig::default()
        };
        let engine = Engine::new(
            store,
            AgentRegistry::with_builtins(),
            Arc::new(SystemClock),
            config,
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port is free");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();
        if !options.without_workers {
            let (engine, shutdown) = (engine.clone(), shutdown.clone());
            tasks.push(tokio::spawn(async move { engine.run(shutdown).await }));
        }
        let server_config = ServerConfig {
            token: options.token,
        };
        let server_shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            oaj_server::serve(listener, engine, server_config, server_shutdown)
                .await
                .expect("the server runs");
        }));
        TestServer {
            url,
            client: reqwest::Client::new(),
            shutdown,
            db,
            tasks,
            _dir: dir,
        }
    }

    /// Stops the server and its engine and waits for both.
    pub async fn stop(mut self) -> Option<TempDir> {
        self.shutdown.cancel();
        for task in self.tasks.drain(..) {
            task.await.expect("server tasks do not panic");
        }
        self._dir.take()
    }

    pub fn db_path(&self) -> &Path {
        &self.db
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(self.url(path)).send().await.expect("sent");
        decode(response).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let request = self.client.post(self.url(path)).json(&body);
        decode(request.send().await.expect("sent")).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .delete(self.url(path))
            .send()
            .await
            .expect("sent");
        decode(response).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Registers the `greet` workflow: one echo step.
    pub async fn greet_register(&self) {
        let (status, body) = self.post("/v1/workflows", greet_workflow("1.0.0")).await;
        assert!(status == 201 || status == 200, "register failed: {body}");
    }

    /// Creates a job and returns its id.
    pub async fn job_create(&self, body: Value) -> String {
        let (status, job) = self.post("/v1/jobs", body).await;
        assert_eq!(status, 201, "create failed: {job}");
        job["id"].as_str().expect("a job id").to_owned()
    }

    /// Polls a job until it reaches `state`, for at most ten seconds.
    pub async fn job_wait(&self, id: &str, state: &str) -> Value {
        for _ in 0..200 {
            let (_, job) = self.get(&format!("/v1/jobs/{id}")).await;
            if job["state"] == state {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("job {id} did not reach {state}");
    }
}

async fn decode(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("a body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body)
}

/// Builds a workflow with one echo step that returns its input's name.
pub fn greet_workflow(version: &str) -> Value {
    json!({
        "id": "greet",
        "version": version,
        "metadata": {"tags": ["demo"], "category": "examples"},
        "inputs": {"name": {"type": "string", "required": true}},
        "steps": [{"id": "say", "component": "echo", "inputs": {"name": "${inputs.name}"}}]
    })
}

/// Builds a workflow with one sleep step of `ms` milliseconds.
pub fn nap_workflow(ms: u64) -> Value {
    json!({
        "id": "nap",
        "steps": [{"id": "rest", "component": "sleep", "inputs": {"ms": ms}}]
    })
}

/// Connects to `url` in a new schema that no other test uses.
async fn postgres_store(url: &str) -> PostgresStore {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos();
    let options = PostgresOptions {
        schema: Some(format!("oaj_api_{}_{nanos}", std::process::id())),
        pool_size: 2,
    };
    PostgresStore::connect_with(url, options)
        .await
        .expect("the test PostgreSQL server accepts a new store")
}

/// Returns the test PostgreSQL server's URL from `OAJ_TEST_DATABASE_URL`. Without it, fails under
/// CI (`CI=true`) and otherwise returns `None` after a notice.
pub fn postgres_url() -> Option<String> {
    const VAR: &str = "OAJ_TEST_DATABASE_URL";
    match std::env::var(VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
            panic!(
                "{VAR} is not set, but CI=true requires the PostgreSQL tests to run: start a \
                 server with scripts/pg-test-cluster.sh start and export its URL"
            )
        }
        _ => {
            eprintln!(
                "*** SKIPPED: a PostgreSQL API test, because {VAR} is not set. Start a server \
                 with scripts/pg-test-cluster.sh start and export its URL. ***"
            );
            None
        }
    }
}
