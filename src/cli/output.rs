//! Shared output pieces: aligned tables and the words of values.

use std::io::IsTerminal;

use serde_json::{json, Value};

use lote::api::ApiError;
use lote::blob::transfer::TransferError;
use lote::client::ClientError;
use lote::domain::RejectionCode;

/// Aligned columns.
pub(crate) fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.iter().map(|h| h.to_uppercase()).collect());
    if rows.is_empty() {
        out.push_str("(none)\n");
    }
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

pub(super) fn word<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(s)) => s,
        Ok(v) => v.to_string(),
        Err(_) => "?".into(),
    }
}

pub(super) fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref()
        .map(|v| v.to_string())
        .unwrap_or_else(|| "-".into())
}

pub(super) fn with_version<T: serde::Serialize>(v: &lote::domain::Versioned<T>) -> Value {
    let mut value = serde_json::to_value(&v.state).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.insert("version".into(), json!(v.version));
    }
    value
}

pub(super) fn trace_line(t: &lote::domain::autoscale::TraceEntry) -> String {
    use lote::domain::autoscale::TraceEntry as T;
    match t {
        T::Read {
            line,
            col,
            name,
            value,
        } => format!("{line}:{col}  read   {name} = {value}"),
        T::Assign {
            line,
            col,
            name,
            value,
        } => format!("{line}:{col}  set    {name} = {value}"),
        T::Stop { line, col } => format!("{line}:{col}  stop()"),
        T::Sample {
            line,
            col,
            metric,
            method,
            from,
            to,
            samples,
            percent,
            required_percent,
        } => {
            let window = if from.is_empty() {
                String::new()
            } else {
                format!(" over ({from}, {to}]")
            };
            let need = required_percent.map_or(String::new(), |p| format!(", {p}% required"));
            format!("{line}:{col}  sample {metric}.{method}{window}: {samples} sample(s), {percent:.0}% present{need}")
        }
    }
}

pub(super) fn refused(message: impl Into<String>) -> ClientError {
    ClientError::Api(ApiError::rejected(RejectionCode::InvalidValue, message))
}

pub(super) fn from_transfer(e: TransferError) -> ClientError {
    match e {
        TransferError::Client(c) => c,
        other => ClientError::Protocol(other.to_string()),
    }
}

/// A progress line on stderr for transfers worth watching.
pub(super) struct Progress {
    label: String,
    shown: bool,
}

impl Progress {
    pub(super) fn new(label: impl Into<String>) -> Self {
        Progress {
            label: label.into(),
            shown: false,
        }
    }

    pub(super) fn update(&mut self, done: u64, total: u64) {
        const WORTH_SHOWING: u64 = 8 << 20;
        if total < WORTH_SHOWING || !std::io::stderr().is_terminal() {
            return;
        }
        let width = 30u64;
        let filled = (done * width)
            .checked_div(total)
            .unwrap_or(width)
            .min(width);
        eprint!(
            "\r{} [{}{}] {:.0}/{:.0} MiB",
            self.label,
            "#".repeat(filled as usize),
            " ".repeat((width - filled) as usize),
            done as f64 / 1048576.0,
            total as f64 / 1048576.0
        );
        self.shown = true;
    }

    pub(super) fn finish(&self) {
        if self.shown {
            eprintln!();
        }
    }
}
