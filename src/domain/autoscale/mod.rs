//! Autoscale: Azure Batch's formula language (lexer, parser, evaluator with
//! a trace and a step budget) and the sampled metrics it reads.
//!
//! The language as lote reads it, with every choice where Azure's
//! documentation is silent, is in `docs/autoscale.md`.

pub mod eval;
pub mod examples;
mod lex;
pub mod metrics;
pub mod syntax;

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use eval::{evaluate, Inputs, Outcome, TraceEntry};
pub use metrics::{History, Metric, Sample, METRIC_COUNT};
pub use syntax::{parse, Formula, Word};

use crate::domain::spec::Deallocation;

/// A place in the formula text, 1-based.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

/// What went wrong, one kind per cause.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    Syntax,
    TooLong,
    TooManyStatements,
    TooDeep,
    ReadOnly,
    UnknownFunction,
    UnknownVariable,
    Arity,
    TypeMismatch,
    DivisionByZero,
    Domain,
    EmptyList,
    IndexOutOfRange,
    InvalidTime,
    InsufficientSampleData,
    BudgetExceeded,
}

impl ErrorKind {
    /// Azure's error code where it has one, a lote code otherwise.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::InsufficientSampleData => "InsufficientSampleData",
            ErrorKind::Syntax
            | ErrorKind::TooLong
            | ErrorKind::TooManyStatements
            | ErrorKind::TooDeep
            | ErrorKind::ReadOnly
            | ErrorKind::UnknownFunction
            | ErrorKind::UnknownVariable
            | ErrorKind::Arity => "InvalidAutoScaleFormula",
            _ => "AutoScaleFormulaEvaluationError",
        }
    }
}

/// A formula error with where it is and what was expected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FormulaError {
    pub kind: ErrorKind,
    pub pos: Pos,
    pub message: String,
}

impl FormulaError {
    pub fn new(kind: ErrorKind, pos: Pos, message: impl Into<String>) -> Self {
        FormulaError {
            kind,
            pos,
            message: message.into(),
        }
    }
}

impl fmt::Display for FormulaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Line {}, Col {}: {}",
            self.pos.line, self.pos.col, self.message
        )
    }
}

impl std::error::Error for FormulaError {}

impl Word {
    /// The pool's deallocation option for this word. `retaineddata` waits
    /// for the node's tasks like `taskcompletion`: lote deletes task data
    /// with the node, so there is nothing further to wait for.
    pub fn deallocation(self) -> Deallocation {
        match self {
            Word::Requeue => Deallocation::Requeue,
            Word::Terminate => Deallocation::Terminate,
            Word::TaskCompletion | Word::RetainedData => Deallocation::TaskCompletion,
        }
    }

    pub fn from_deallocation(d: Deallocation) -> Word {
        match d {
            Deallocation::Requeue => Word::Requeue,
            Deallocation::Terminate => Word::Terminate,
            Deallocation::TaskCompletion => Word::TaskCompletion,
        }
    }
}

/// Parses and evaluates in one go; a parse error becomes the outcome's
/// error, with the pool's current target echoed in the results.
pub fn evaluate_text(text: &str, inputs: &Inputs) -> Outcome {
    match parse(text) {
        Ok(f) => evaluate(&f, inputs),
        Err(e) => Outcome {
            results: format!(
                "$TargetDedicatedNodes={};$NodeDeallocationOption={}",
                inputs.target_dedicated,
                inputs.deallocation.name()
            ),
            target_dedicated: None,
            deallocation: inputs.deallocation.name().into(),
            stopped: false,
            error: Some(e),
            trace: Vec::new(),
            trace_dropped: 0,
            steps: 0,
        },
    }
}

#[cfg(test)]
mod tests;
