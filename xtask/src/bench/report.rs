//! Medians, percentiles, the printed table and target/bench/results.json.
use std::path::Path;

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

pub fn median(values: &[f64]) -> f64 {
    percentile(values, 50.0)
}

/// Nearest-rank percentile; NaN for no values.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// One line of the table.
pub struct Row {
    pub what: String,
    pub value: String,
    pub ratio: Option<f64>,
    /// The same ratio for the typical call (median chunk), see worker.rs.
    pub typical: Option<f64>,
    pub target: String,
    /// None: no target for this row.
    pub met: Option<bool>,
}

impl Row {
    pub fn new(what: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            value: value.into(),
            ratio: None,
            typical: None,
            target: String::new(),
            met: None,
        }
    }

    pub fn ratio(mut self, ratio: f64) -> Self {
        self.ratio = Some(ratio);
        self
    }

    pub fn typical(mut self, ratio: f64) -> Self {
        self.typical = Some(ratio);
        self
    }

    pub fn target(mut self, target: impl Into<String>, met: bool) -> Self {
        self.target = target.into();
        self.met = Some(met);
        self
    }
}

pub fn us(ns: f64) -> String {
    format!("{:.2} µs", ns / 1000.0)
}

pub fn print(rows: &[Row]) {
    let w = rows
        .iter()
        .map(|r| r.what.chars().count())
        .max()
        .unwrap_or(0);
    println!(
        "{:<w$}  {:>14}  {:>7}  {:>7}  {:<22}  result",
        "case", "median", "ratio", "typical", "target"
    );
    println!("{}", "-".repeat(w + 69));
    for r in rows {
        let ratio = r.ratio.map(|x| format!("{x:.3}")).unwrap_or_default();
        let typical = r.typical.map(|x| format!("{x:.3}")).unwrap_or_default();
        let met = match r.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "",
        };
        println!(
            "{:<w$}  {:>14}  {:>7}  {:>7}  {:<22}  {met}",
            r.what, r.value, ratio, typical, r.target
        );
    }
}

pub fn write_json(path: &Path, results: &Value, rows: &[Row]) -> Result<()> {
    let table: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({ "case": r.what, "value": r.value, "ratio": r.ratio, "typical_ratio": r.typical,
                    "target": (!r.target.is_empty()).then_some(&r.target), "met": r.met })
        })
        .collect();
    let mut doc = results.clone();
    doc["table"] = Value::Array(table);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(median(&v), 3.0);
        assert_eq!(percentile(&v, 99.0), 5.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert!(median(&[]).is_nan());
    }
}
