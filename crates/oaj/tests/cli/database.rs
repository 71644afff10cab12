//! Database errors: each ends the command with exit code 1 and a message that names the file and
//! the fix, instead of a panic or a hang.

use std::io::BufRead;
use std::process::{Command, Stdio};

use crate::{oaj, stderr, Sandbox};

#[test]
fn garbage_file_names_file_and_fix() {
    let sandbox = Sandbox::new();
    let garbage = sandbox.write("garbage.db", "this is not a database, only some text\n");

    let output = oaj(&["jobs", "list", "--db", &garbage]);

    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(text.contains(&garbage), "{text}");
    assert!(text.contains("not an oaj database"), "{text}");
    assert!(text.contains("choose another path"), "{text}");
}

#[test]
fn exclusive_lock_reports_busy() {
    let sandbox = Sandbox::new();
    let created = sandbox.oaj(&["jobs", "list"]);
    assert_eq!(created.status.code(), Some(0), "{}", stderr(&created));
    let script = "import sqlite3, sys, time\n\
                  connection = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
                  connection.execute('BEGIN EXCLUSIVE')\n\
                  print('locked', flush=True)\n\
                  time.sleep(300)\n";
    let mut holder = Command::new("python3")
        .args(["-c", script])
        .arg(sandbox.db())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut line = String::new();
    std::io::BufReader::new(holder.stdout.take().expect("piped stdout"))
        .read_line(&mut line)
        .expect("python3 reports the lock");
    assert_eq!(line.trim(), "locked");

    let output = sandbox.oaj(&["jobs", "list"]);
    holder.kill().expect("the lock holder is killable");
    holder.wait().expect("the lock holder is reaped");

    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(text.contains("locked") || text.contains("busy"), "{text}");
    assert!(text.contains(sandbox.db().to_str().unwrap()), "{text}");
}

#[test]
fn missing_folder_is_named() {
    let sandbox = Sandbox::new();
    let path = sandbox.path("no/such/folder/oaj.db");

    let output = oaj(&["jobs", "list", "--db", path.to_str().unwrap()]);

    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(text.contains("no/such/folder does not exist"), "{text}");
    assert!(
        !sandbox.path("no").exists(),
        "oaj created the missing folder"
    );
}

#[test]
fn invalid_postgres_url_hides_it() {
    let output = oaj(&["jobs", "list", "--database", "postgres://user:secret@[bad"]);

    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(text.contains("postgres URL not shown"), "{text}");
    assert!(text.contains("invalid postgres URL"), "{text}");
    assert!(!text.contains("secret"), "{text}");
}

#[test]
fn refused_postgres_connection_gives_cause() {
    // A port that was free a moment ago: nothing listens there, so the connection is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/oaj");

    let output = oaj(&["jobs", "list", "--database", &url]);

    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(text.contains("database unavailable"), "{text}");
    assert!(text.contains("refused"), "{text}");
}

/// Regression: a server that accepted the connection and then sent nothing held `oaj` forever,
/// even with `connect_timeout` in the URL, which bounds only the TCP connect.
#[test]
fn silent_postgres_server_times_out() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
    let port = listener.local_addr().expect("bound address").port();
    // Accepts every connection and keeps it open, sending nothing, until the test ends.
    std::thread::spawn(move || {
        let accepted: Vec<_> = listener.incoming().map_while(Result::ok).collect();
        drop(accepted);
    });
    let url = format!("postgres://postgres@127.0.0.1:{port}/oaj?connect_timeout=1");

    // `finish` kills the command after its deadline, so that the old hang fails the test.
    let child = Command::new(env!("CARGO_BIN_EXE_oaj"))
        .args(["jobs", "list", "--database", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the oaj binary runs");
    let output = crate::finish(child, "oaj jobs list on a silent server");

    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(
        text.contains("no answer from the server within 1 s"),
        "{text}"
    );
    assert!(text.contains("connect_timeout"), "{text}");
}

/// Regression: an empty OAJ_DATABASE_URL counted as a URL, so `--db` next to it was rejected as
/// a conflict. An empty `--database` failed to connect to "localhost:5432" instead of being a
/// usage error.
#[test]
fn empty_database_url_is_unset() {
    let sandbox = Sandbox::new();
    let output = sandbox
        .command(&["jobs", "list"])
        .env("OAJ_DATABASE_URL", "")
        .output()
        .expect("the oaj binary runs");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));

    let output = oaj(&["jobs", "list", "--database", ""]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("--database"),
        "{}",
        stderr(&output)
    );
}
