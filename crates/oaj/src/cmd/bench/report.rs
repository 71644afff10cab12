//! The report of one benchmark run: its settings and results, printed as a table or as JSON.

use serde_json::{Map, Value};

/// Settings and results of one run. Keys carry their unit, such as `jobs_per_second`.
#[derive(Debug)]
pub struct Report {
    workload: &'static str,
    settings: Vec<(String, Value)>,
    results: Vec<(String, Value)>,
}

impl Report {
    /// Starts an empty report of `workload`.
    pub fn new(workload: &'static str) -> Report {
        Report {
            workload,
            settings: Vec::new(),
            results: Vec::new(),
        }
    }

    /// Adds a setting of the run.
    pub fn setting(&mut self, key: impl Into<String>, value: impl Into<Value>) {
        self.settings.push((key.into(), value.into()));
    }

    /// Adds a measured or counted result.
    pub fn result(&mut self, key: impl Into<String>, value: impl Into<Value>) {
        self.results.push((key.into(), value.into()));
    }

    /// Adds a measured quantity, rounded to three decimals.
    pub fn measure(&mut self, key: impl Into<String>, value: f64) {
        self.result(key, (value * 1000.0).round() / 1000.0);
    }

    /// Renders the report as one JSON object with `workload`, `settings` and `results`.
    pub fn to_json(&self) -> Value {
        let object = |fields: &[(String, Value)]| {
            let map: Map<String, Value> = fields
                .iter()
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect();
            Value::Object(map)
        };
        serde_json::json!({
            "workload": self.workload,
            "settings": object(&self.settings),
            "results": object(&self.results),
        })
    }

    /// Renders the report as two aligned blocks of `key  value` lines.
    pub fn to_table(&self) -> String {
        let width = self
            .settings
            .iter()
            .chain(&self.results)
            .map(|(key, _)| key.len())
            .max()
            .unwrap_or(0);
        let mut text = format!("{:width$}  {}\n", "workload", self.workload);
        for (key, value) in &self.settings {
            text.push_str(&format!("{key:width$}  {}\n", shown(value)));
        }
        text.push_str(&format!("{:-<width$}\n", ""));
        for (key, value) in &self.results {
            text.push_str(&format!("{key:width$}  {}\n", shown(value)));
        }
        text
    }
}

/// Shows a string without its JSON quotes.
fn shown(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Returns the value at quantile `q` (0 to 1) of `sorted`, by the nearest-rank method.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    assert!(!sorted.is_empty(), "a quantile needs at least one sample");
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_uses_nearest_rank() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&samples, 0.5), 50.0);
        assert_eq!(quantile(&samples, 0.99), 99.0);
        assert_eq!(quantile(&samples, 1.0), 100.0);
        assert_eq!(quantile(&[7.0], 0.99), 7.0);
    }

    #[test]
    fn table_lists_settings_before_results() {
        let mut report = Report::new("drain");
        report.setting("jobs", 10);
        report.measure("jobs_per_second", 12.34567);
        let table = report.to_table();
        assert!(table.starts_with("workload         drain\n"), "{table}");
        assert!(table.contains("jobs             10\n"), "{table}");
        assert!(table.ends_with("jobs_per_second  12.346\n"), "{table}");
    }
}
