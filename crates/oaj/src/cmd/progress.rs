//! Live progress of one job on stderr: a redrawn table of steps on a terminal, plain lines
//! otherwise.

use std::collections::BTreeMap;
use std::io::Write;

use oaj_store::Event;

use super::terminal::printable;

/// Progress of one step, gathered from events.
#[derive(Debug, Default, Clone)]
struct StepProgress {
    state: String,
    items_total: Option<u64>,
    items_done: u64,
    items_failed: u64,
    retries: u64,
}

/// Prints a job's progress from its events.
pub struct Progress {
    job_id: String,
    enabled: bool,
    terminal: bool,
    steps: BTreeMap<String, StepProgress>,
    job_state: String,
    lines_drawn: usize,
}

impl Progress {
    /// Creates a printer for `job_id`; `terminal` selects the redrawn table.
    pub fn new(job_id: &str, enabled: bool, terminal: bool) -> Progress {
        Progress {
            job_id: job_id.to_owned(),
            enabled,
            terminal,
            steps: BTreeMap::new(),
            job_state: "queued".to_owned(),
            lines_drawn: 0,
        }
    }

    /// Takes in one event; events of other jobs are ignored.
    pub fn event(&mut self, event: &Event) {
        if event.job_id.as_deref() != Some(self.job_id.as_str()) || !self.enabled {
            return;
        }
        self.apply(event);
        if !self.terminal {
            if let Some(line) = plain_line(event) {
                errln!("{}", printable(&line));
            }
        }
    }

    fn apply(&mut self, event: &Event) {
        if let Some(state) = event.kind.strip_prefix("job.") {
            self.job_state = state.to_owned();
            return;
        }
        let Some(step_id) = &event.step_id else {
            return;
        };
        let step = self.steps.entry(step_id.clone()).or_default();
        let step_state = event
            .data
            .get("step_state")
            .and_then(|value| value.as_str());
        match (event.kind.as_str(), event.item) {
            ("step.running", None) => {
                step.state = "running".to_owned();
                step.items_total = event
                    .data
                    .get("items_total")
                    .and_then(|value| value.as_u64());
            }
            (kind, None) if kind.starts_with("step.") => {
                step.state = kind["step.".len()..].to_owned()
            }
            ("attempt.started", None) => step.state = "running".to_owned(),
            (_, None) if step_state.is_some() => {
                step.state = step_state.unwrap_or_default().to_owned()
            }
            (_, Some(_)) if step_state == Some("completed") => step.items_done += 1,
            (_, Some(_)) if step_state == Some("failed") => step.items_failed += 1,
            _ => {}
        }
        if step_state == Some("retrying") {
            step.retries += 1;
        }
    }

    /// Redraws the table on a terminal.
    pub fn tick(&mut self) {
        if !self.enabled || !self.terminal {
            return;
        }
        let mut out = std::io::stderr().lock();
        let mut text = String::new();
        if self.lines_drawn > 0 {
            text.push_str(&format!("\x1b[{}A", self.lines_drawn));
        }
        let mut lines = vec![format!("job {}  {}", self.job_id, self.job_state)];
        for (id, step) in &self.steps {
            lines.push(step_line(id, step));
        }
        for line in &lines {
            text.push_str("\x1b[2K");
            text.push_str(line);
            text.push('\n');
        }
        self.lines_drawn = lines.len();
        // Progress is best effort: a closed stderr must not stop the job.
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }

    /// Draws the last state.
    pub fn finish(&mut self) {
        self.tick();
    }
}

fn step_line(id: &str, step: &StepProgress) -> String {
    let mut line = format!(
        "  {id:<24} {:<10}",
        if step.state.is_empty() {
            "pending"
        } else {
            &step.state
        }
    );
    if let Some(total) = step.items_total {
        line.push_str(&format!(" {}/{} items", step.items_done, total));
        if step.items_failed > 0 {
            line.push_str(&format!(", {} failed", step.items_failed));
        }
    }
    if step.retries > 0 {
        line.push_str(&format!(", {} retries", step.retries));
    }
    line
}

/// Formats the events worth a line of their own when stderr is not a terminal.
fn plain_line(event: &Event) -> Option<String> {
    let step = event.step_id.as_deref().unwrap_or("");
    let item = event.item.map_or(String::new(), |item| format!("[{item}]"));
    let error = event.data.get("error").and_then(|value| value.as_str());
    let step_state = event
        .data
        .get("step_state")
        .and_then(|value| value.as_str());
    let line = match event.kind.as_str() {
        kind if kind.starts_with("job.") => match error {
            Some(error) => format!("job {}: {error}", &kind[4..]),
            None => format!("job {}", &kind[4..]),
        },
        kind if kind.starts_with("step.") && event.item.is_none() => match error {
            Some(error) => format!("step {step} {}: {error}", &kind[5..]),
            None => format!("step {step} {}", &kind[5..]),
        },
        "attempt.started" if event.item.is_none() => {
            format!("step {step} attempt {} started", event.attempt.unwrap_or(0))
        }
        "attempt.succeeded" if event.item.is_none() => format!("step {step} completed"),
        "attempt.failed" | "attempt.timed_out" | "attempt.interrupted" => format!(
            "step {step}{item} attempt {} {}: {} ({})",
            event.attempt.unwrap_or(0),
            &event.kind[8..],
            error.unwrap_or("no message"),
            step_state.unwrap_or("-")
        ),
        _ => return None,
    };
    Some(line)
}
