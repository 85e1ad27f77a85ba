//! Evaluation of a parsed formula against a pool's current figures and
//! sampled history, under a fixed step budget, with a trace.

use chrono::{Datelike, NaiveDate, TimeZone, Timelike, Utc};
use serde::{Deserialize, Serialize};

mod functions;

use super::metrics::{History, Metric, Sample};
use super::syntax::{
    BinOp, Expr, Field, Formula, Func, Lhs, Method, Target, UnOp, Var, Word, TICKS_PER_SECOND,
};
use super::{ErrorKind, FormulaError, Pos};

/// Most evaluation steps (one per expression node and per vector element
/// touched). A month of 30-second samples is about 90,000 values, so an
/// honest formula stays far below it; a hostile one stops here.
pub const STEPS_MAX: u64 = 5_000_000;
/// Most trace entries kept; later ones are counted, not stored.
pub const TRACE_MAX: usize = 500;

/// What a formula is evaluated against.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    /// The evaluation time, microseconds since the Unix epoch.
    pub now_micros: i64,
    /// Every metric's value now (what a metric reads as, used as a number).
    pub current: &'a Sample,
    pub history: History<'a>,
    /// The pool's target before this evaluation.
    pub target_dedicated: u32,
    /// The pool's deallocation option before this evaluation.
    pub deallocation: Word,
    /// Seed of `rand()`, so that an evaluation can be repeated exactly.
    pub seed: u64,
}

/// One line of an evaluation's trace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TraceEntry {
    /// A service variable was read.
    Read {
        line: u32,
        col: u32,
        name: String,
        value: String,
    },
    /// A sample method was called.
    Sample {
        line: u32,
        col: u32,
        metric: String,
        method: String,
        /// The window, as RFC 3339 times (empty for count-based calls).
        from: String,
        to: String,
        samples: usize,
        percent: f64,
        required_percent: Option<f64>,
    },
    /// A statement assigned a variable.
    Assign {
        line: u32,
        col: u32,
        name: String,
        value: String,
    },
    /// `stop()` ended the evaluation.
    Stop { line: u32, col: u32 },
}

/// The result of one evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// Azure's results string: `$TargetDedicatedNodes=4;$NodeDeallocationOption=requeue;...`.
    pub results: String,
    /// The dedicated target the formula set, as a number (before
    /// truncation and clamping); `None` if it did not set one or failed.
    pub target_dedicated: Option<f64>,
    pub deallocation: WordName,
    /// `stop()` ended evaluation early.
    pub stopped: bool,
    pub error: Option<FormulaError>,
    pub trace: Vec<TraceEntry>,
    /// Trace entries past [`TRACE_MAX`], not kept.
    pub trace_dropped: usize,
    pub steps: u64,
}

/// A deallocation word by name, for serialized outcomes.
pub type WordName = String;

impl Outcome {
    /// The node count to apply: truncated toward zero (as Azure does),
    /// negative as zero, clamped to `max`. `None` when nothing is to change
    /// (an error, or no target set).
    pub fn target_nodes(&self, max: u32) -> Option<u32> {
        if self.error.is_some() {
            return None;
        }
        let t = self.target_dedicated?;
        Some(t.trunc().clamp(0.0, f64::from(max)) as u32)
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Value {
    Double(f64),
    Vec(Vec<f64>),
    Str(String),
    /// Ticks (100 ns) since the Unix epoch.
    Time(i64),
    /// Ticks (100 ns).
    Interval(i64),
    Metric(Metric),
    Word(Word),
}

impl Value {
    fn type_name(&self) -> &'static str {
        match self {
            Value::Double(_) => "double",
            Value::Vec(_) => "doubleVec",
            Value::Str(_) => "string",
            Value::Time(_) => "timestamp",
            Value::Interval(_) => "timeinterval",
            Value::Metric(_) => "double",
            Value::Word(_) => "deallocation option",
        }
    }
}

/// Stops evaluation: an error, or `stop()`.
enum Halt {
    Error(FormulaError),
    Stop,
}

impl From<FormulaError> for Halt {
    fn from(e: FormulaError) -> Self {
        Halt::Error(e)
    }
}

type R<T> = Result<T, Halt>;

fn err<T>(kind: ErrorKind, pos: Pos, message: impl Into<String>) -> R<T> {
    Err(Halt::Error(FormulaError::new(kind, pos, message)))
}

struct Eval<'a> {
    inputs: &'a Inputs<'a>,
    users: Vec<Option<Value>>,
    /// Last value given to either spelling of each read-write variable.
    dedicated: Option<Value>,
    dedicated_alias: Option<Value>,
    dedicated_full: Option<Value>,
    low_priority_alias: Option<Value>,
    low_priority_full: Option<Value>,
    low_priority_last: Option<Value>,
    deallocation: Option<Word>,
    steps: u64,
    rng: u64,
    trace: Vec<TraceEntry>,
    trace_dropped: usize,
}

fn format_number(x: f64) -> String {
    if x.is_nan() {
        "NaN".into()
    } else if x.is_infinite() {
        if x > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

fn format_time(ticks: i64) -> String {
    let micros = ticks / 10;
    match Utc.timestamp_micros(micros).single() {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        None => format!("<time {ticks}>"),
    }
}

/// .NET's TimeSpan layout, `[-][d.]hh:mm:ss[.fffffff]`, which Azure prints.
fn format_interval(ticks: i64) -> String {
    let sign = if ticks < 0 { "-" } else { "" };
    let t = ticks.unsigned_abs();
    let per_sec = TICKS_PER_SECOND as u64;
    let (secs, frac) = (t / per_sec, t % per_sec);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let mut s = String::from(sign);
    if days > 0 {
        s.push_str(&format!("{days}."));
    }
    s.push_str(&format!(
        "{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    ));
    if frac > 0 {
        s.push_str(&format!(".{frac:07}"));
    }
    s
}

impl<'a> Eval<'a> {
    fn show(&self, v: &Value) -> String {
        match v {
            Value::Double(x) => format_number(*x),
            Value::Vec(v) => {
                let parts: Vec<String> = v.iter().map(|x| format_number(*x)).collect();
                format!("[{}]", parts.join(","))
            }
            Value::Str(s) => s.clone(),
            Value::Time(t) => format_time(*t),
            Value::Interval(t) => format_interval(*t),
            Value::Metric(m) => format_number(self.inputs.current.get(*m)),
            Value::Word(w) => w.name().into(),
        }
    }

    fn note(&mut self, entry: TraceEntry) {
        if self.trace.len() < TRACE_MAX {
            self.trace.push(entry);
        } else {
            self.trace_dropped += 1;
        }
    }

    fn spend(&mut self, n: u64, pos: Pos) -> R<()> {
        self.steps = self.steps.saturating_add(n);
        if self.steps > STEPS_MAX {
            return err(
                ErrorKind::BudgetExceeded,
                pos,
                format!("evaluation took more than {STEPS_MAX} steps; the formula does too much work on sample vectors"),
            );
        }
        Ok(())
    }

    fn now_ticks(&self) -> i64 {
        self.inputs.now_micros.saturating_mul(10)
    }

    fn scalar(&self, v: &Value) -> Option<f64> {
        match v {
            Value::Double(x) => Some(*x),
            Value::Metric(m) => Some(self.inputs.current.get(*m)),
            _ => None,
        }
    }

    fn number(&self, v: &Value, pos: Pos, what: &str) -> R<f64> {
        match self.scalar(v) {
            Some(x) => Ok(x),
            None => err(
                ErrorKind::TypeMismatch,
                pos,
                format!("{what} must be a double; it is a {}", v.type_name()),
            ),
        }
    }

    fn expr(&mut self, e: &Expr) -> R<Value> {
        match e {
            Expr::Num(n) => {
                self.spend(1, Pos::default())?;
                Ok(Value::Double(*n))
            }
            Expr::Str(s) => Ok(Value::Str(s.clone())),
            Expr::Var(var, pos) => {
                self.spend(1, *pos)?;
                self.var(var, *pos)
            }
            Expr::Unary(op, inner, pos) => {
                let v = self.expr(inner)?;
                match (op, &v) {
                    (UnOp::Neg, Value::Interval(t)) => Ok(Value::Interval(t.saturating_neg())),
                    (UnOp::Neg, _) => Ok(Value::Double(-self.number(
                        &v,
                        *pos,
                        "the operand of unary '-'",
                    )?)),
                    (UnOp::Not, _) => Ok(Value::Double(f64::from(
                        self.number(&v, *pos, "the operand of '!'")? == 0.0,
                    ))),
                }
            }
            Expr::Binary(op, l, r, pos) => {
                let lv = self.expr(l)?;
                self.step(lv, *op, r, *pos)
            }
            Expr::Chain(first, rest) => {
                let mut acc = self.expr(first)?;
                for (op, r, pos) in rest {
                    acc = self.step(acc, *op, r, *pos)?;
                }
                Ok(acc)
            }
            Expr::Cond(c, a, b, pos) => {
                let cv = self.expr(c)?;
                let test = self.number(&cv, *pos, "the condition of '?:'")?;
                if test != 0.0 {
                    self.expr(a)
                } else {
                    self.expr(b)
                }
            }
            Expr::Call(func, args, pos) => self.call(*func, args, *pos),
            Expr::Method(recv, method, args, pos) => {
                let rv = self.expr(recv)?;
                let Value::Metric(m) = rv else {
                    return err(
                        ErrorKind::TypeMismatch,
                        *pos,
                        format!(
                            "{} is a method of the read-only service variables (such as $PendingTasks); it was called on a {}",
                            method.name(),
                            rv.type_name()
                        ),
                    );
                };
                self.method(m, *method, args, *pos)
            }
            Expr::Field(recv, field, pos) => {
                let rv = self.expr(recv)?;
                let Value::Time(t) = rv else {
                    return err(
                        ErrorKind::TypeMismatch,
                        *pos,
                        format!(
                            "fields such as .hour belong to a timestamp; this is a {}",
                            rv.type_name()
                        ),
                    );
                };
                let Some(dt) = Utc.timestamp_micros(t / 10).single() else {
                    return err(ErrorKind::InvalidTime, *pos, "timestamp is out of range");
                };
                let x = match field {
                    Field::Year => dt.year() as f64,
                    Field::Month => dt.month() as f64,
                    Field::Day => dt.day() as f64,
                    // Monday is 1 (documented); Sunday is 7, which the
                    // weekend tests `weekday >= 6 && weekday <= 7` need.
                    Field::Weekday => dt.weekday().number_from_monday() as f64,
                    Field::Hour => dt.hour() as f64,
                    Field::Minute => dt.minute() as f64,
                    Field::Second => dt.second() as f64,
                };
                Ok(Value::Double(x))
            }
        }
    }

    fn var(&mut self, var: &Var, pos: Pos) -> R<Value> {
        Ok(match var {
            Var::User(i) => match self.users.get(*i).cloned().flatten() {
                Some(v) => v,
                None => {
                    return err(
                        ErrorKind::UnknownVariable,
                        pos,
                        "variable is read before it is assigned",
                    )
                }
            },
            Var::Interval(t) => Value::Interval(*t),
            Var::Word(w) => Value::Word(*w),
            Var::Metric(m) => {
                let value = format_number(self.inputs.current.get(*m));
                self.note(TraceEntry::Read {
                    line: pos.line,
                    col: pos.col,
                    name: m.name().into(),
                    value,
                });
                Value::Metric(*m)
            }
            Var::Target(t) => {
                let (name, v) = match t {
                    Target::Dedicated | Target::DedicatedAlias => (
                        "$TargetDedicatedNodes",
                        self.dedicated
                            .clone()
                            .unwrap_or(Value::Double(f64::from(self.inputs.target_dedicated))),
                    ),
                    Target::LowPriority | Target::LowPriorityAlias => (
                        "$TargetLowPriorityNodes",
                        self.low_priority_last.clone().unwrap_or(Value::Double(0.0)),
                    ),
                    Target::Deallocation => (
                        "$NodeDeallocationOption",
                        Value::Word(self.deallocation.unwrap_or(self.inputs.deallocation)),
                    ),
                };
                let shown = self.show(&v);
                self.note(TraceEntry::Read {
                    line: pos.line,
                    col: pos.col,
                    name: name.into(),
                    value: shown,
                });
                v
            }
        })
    }

    /// `left op right`, with `left` already evaluated.
    fn step(&mut self, lv: Value, op: BinOp, r: &Expr, pos: Pos) -> R<Value> {
        if matches!(op, BinOp::And | BinOp::Or) {
            // Short-circuit, so a guard such as `p > 70 && avg(...)` does
            // not evaluate a sample call it guards against.
            let a = self.number(&lv, pos, &format!("the left side of '{}'", op.symbol()))?;
            let truthy = a != 0.0;
            if (op == BinOp::And && !truthy) || (op == BinOp::Or && truthy) {
                return Ok(Value::Double(f64::from(truthy)));
            }
            let rv = self.expr(r)?;
            let b = self.number(&rv, pos, &format!("the right side of '{}'", op.symbol()))?;
            return Ok(Value::Double(f64::from(b != 0.0)));
        }
        let rv = self.expr(r)?;
        self.binary(op, lv, rv, pos)
    }

    fn binary(&mut self, op: BinOp, l: Value, r: Value, pos: Pos) -> R<Value> {
        use Value as V;
        let l = match l {
            V::Metric(m) => V::Double(self.inputs.current.get(m)),
            other => other,
        };
        let r = match r {
            V::Metric(m) => V::Double(self.inputs.current.get(m)),
            other => other,
        };
        let arith = |a: f64, b: f64| -> Option<f64> {
            match op {
                BinOp::Add => Some(a + b),
                BinOp::Sub => Some(a - b),
                BinOp::Mul => Some(a * b),
                BinOp::Div => Some(a / b),
                _ => None,
            }
        };
        let cmp = |o: std::cmp::Ordering| -> Option<f64> {
            use std::cmp::Ordering::*;
            let b = match op {
                BinOp::Lt => o == Less,
                BinOp::Le => o != Greater,
                BinOp::Gt => o == Greater,
                BinOp::Ge => o != Less,
                BinOp::Eq => o == Equal,
                BinOp::Ne => o != Equal,
                _ => return None,
            };
            Some(f64::from(b))
        };
        let div_zero = |b: f64| op == BinOp::Div && b == 0.0;
        let out = match (&l, &r) {
            (V::Double(a), V::Double(b)) => {
                if div_zero(*b) {
                    return err(ErrorKind::DivisionByZero, pos, "division by zero");
                }
                match arith(*a, *b) {
                    Some(x) => Some(V::Double(x)),
                    None => a.partial_cmp(b).and_then(cmp).map(V::Double),
                }
            }
            (V::Vec(v), V::Double(b)) | (V::Double(b), V::Vec(v))
                if matches!(op, BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div) =>
            {
                self.spend(v.len() as u64, pos)?;
                let vec_left = matches!(l, V::Vec(_));
                if vec_left && div_zero(*b) {
                    return err(ErrorKind::DivisionByZero, pos, "division by zero");
                }
                let mut out = Vec::with_capacity(v.len());
                for x in v {
                    let (a, c) = if vec_left { (*x, *b) } else { (*b, *x) };
                    if div_zero(c) {
                        return err(
                            ErrorKind::DivisionByZero,
                            pos,
                            "division by zero in a vector element",
                        );
                    }
                    out.push(arith(a, c).unwrap_or(0.0));
                }
                Some(V::Vec(out))
            }
            (V::Vec(a), V::Vec(b))
                if matches!(op, BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div) =>
            {
                if a.len() != b.len() {
                    return err(
                        ErrorKind::TypeMismatch,
                        pos,
                        format!(
                            "doubleVec {} doubleVec needs equal lengths; they are {} and {}",
                            op.symbol(),
                            a.len(),
                            b.len()
                        ),
                    );
                }
                self.spend(a.len() as u64, pos)?;
                let mut out = Vec::with_capacity(a.len());
                for (x, y) in a.iter().zip(b) {
                    if div_zero(*y) {
                        return err(
                            ErrorKind::DivisionByZero,
                            pos,
                            "division by zero in a vector element",
                        );
                    }
                    out.push(arith(*x, *y).unwrap_or(0.0));
                }
                Some(V::Vec(out))
            }
            (V::Double(a), V::Interval(t)) | (V::Interval(t), V::Double(a)) if op == BinOp::Mul => {
                Some(V::Interval(scale_ticks(*t, *a, pos)?))
            }
            (V::Interval(t), V::Double(a)) if op == BinOp::Div => {
                if *a == 0.0 {
                    return err(ErrorKind::DivisionByZero, pos, "division by zero");
                }
                Some(V::Interval(scale_ticks(*t, 1.0 / *a, pos)?))
            }
            (V::Interval(a), V::Interval(b)) => match op {
                BinOp::Add => Some(V::Interval(a.saturating_add(*b))),
                BinOp::Sub => Some(V::Interval(a.saturating_sub(*b))),
                _ => cmp(a.cmp(b)).map(V::Double),
            },
            (V::Time(t), V::Interval(i)) | (V::Interval(i), V::Time(t)) if op == BinOp::Add => {
                Some(V::Time(t.saturating_add(*i)))
            }
            // Not in Azure's table, but the reading every user expects.
            (V::Time(t), V::Interval(i)) if op == BinOp::Sub => Some(V::Time(t.saturating_sub(*i))),
            (V::Time(a), V::Time(b)) => match op {
                BinOp::Sub => Some(V::Interval(a.saturating_sub(*b))),
                _ => cmp(a.cmp(b)).map(V::Double),
            },
            (V::Str(a), V::Str(b)) => cmp(a.cmp(b)).map(V::Double),
            (V::Word(a), V::Word(b)) if matches!(op, BinOp::Eq | BinOp::Ne) => {
                Some(V::Double(f64::from((a == b) == (op == BinOp::Eq))))
            }
            _ => None,
        };
        match out {
            Some(v) => Ok(v),
            None => err(
                ErrorKind::TypeMismatch,
                pos,
                format!(
                    "{} {} {} is not defined",
                    l.type_name(),
                    op.symbol(),
                    r.type_name()
                ),
            ),
        }
    }

    fn assign(&mut self, lhs: &Lhs, written: &str, v: Value, pos: Pos) -> R<()> {
        let shown = self.show(&v);
        self.note(TraceEntry::Assign {
            line: pos.line,
            col: pos.col,
            name: written.into(),
            value: shown,
        });
        match lhs {
            Lhs::User(i) => {
                if *i >= self.users.len() {
                    self.users.resize(*i + 1, None);
                }
                self.users[*i] = Some(v);
            }
            Lhs::Target(Target::Deallocation) => match v {
                Value::Word(w) => self.deallocation = Some(w),
                other => {
                    return err(
                        ErrorKind::TypeMismatch,
                        pos,
                        format!("$NodeDeallocationOption takes requeue, terminate, taskcompletion or retaineddata; this is a {}", other.type_name()),
                    )
                }
            },
            Lhs::Target(t) => {
                let x = match self.scalar(&v) {
                    Some(x) if x.is_finite() => x,
                    Some(x) => {
                        return err(
                            ErrorKind::Domain,
                            pos,
                            format!("{written} must be a finite number; it is {}", format_number(x)),
                        )
                    }
                    None => {
                        return err(
                            ErrorKind::TypeMismatch,
                            pos,
                            format!("{written} must be a double; it is a {} (wrap a sample in avg(), max() or val(v, 0))", v.type_name()),
                        )
                    }
                };
                let d = Value::Double(x);
                match t {
                    Target::Dedicated => {
                        self.dedicated_full = Some(d.clone());
                        self.dedicated = Some(d);
                    }
                    Target::DedicatedAlias => {
                        self.dedicated_alias = Some(d.clone());
                        self.dedicated = Some(d);
                    }
                    Target::LowPriority => {
                        self.low_priority_full = Some(d.clone());
                        self.low_priority_last = Some(d);
                    }
                    _ => {
                        self.low_priority_alias = Some(d.clone());
                        self.low_priority_last = Some(d);
                    }
                }
            }
        }
        Ok(())
    }
}

fn scale_ticks(t: i64, by: f64, pos: Pos) -> R<i64> {
    let x = t as f64 * by;
    if !x.is_finite() || x.abs() > i64::MAX as f64 / 2.0 {
        return err(ErrorKind::Domain, pos, "time interval out of range");
    }
    Ok(x.round() as i64)
}

/// RFC 1123 or W3C-DTF (RFC 3339 and its shorter forms) to ticks.
fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    let micros = if let Ok(t) = chrono::DateTime::parse_from_rfc2822(s) {
        t.timestamp_micros()
    } else if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        t.timestamp_micros()
    } else if let Ok(t) = chrono::DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M%:z") {
        t.timestamp_micros()
    } else if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%MZ") {
        t.and_utc().timestamp_micros()
    } else if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros()
    } else if let Ok(d) = NaiveDate::parse_from_str(&format!("{s}-01"), "%Y-%m-%d") {
        d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros()
    } else if s.len() == 4 && s.bytes().all(|b| b.is_ascii_digit()) {
        NaiveDate::from_ymd_opt(s.parse().ok()?, 1, 1)?
            .and_hms_opt(0, 0, 0)?
            .and_utc()
            .timestamp_micros()
    } else {
        return None;
    };
    micros.checked_mul(10)
}

/// Evaluates a parsed formula.
pub fn evaluate(formula: &Formula, inputs: &Inputs) -> Outcome {
    let mut ev = Eval {
        inputs,
        users: vec![None; formula.user_vars.len()],
        dedicated: None,
        dedicated_alias: None,
        dedicated_full: None,
        low_priority_alias: None,
        low_priority_full: None,
        low_priority_last: None,
        deallocation: None,
        steps: 0,
        rng: inputs.seed | 1,
        trace: Vec::new(),
        trace_dropped: 0,
    };
    let mut error = None;
    let mut stopped = false;
    for stmt in &formula.statements {
        let step = ev.expr(&stmt.expr).and_then(|v| match &stmt.lhs {
            Some(lhs) => ev.assign(lhs, &stmt.written, v, stmt.pos),
            None => Ok(()),
        });
        match step {
            Ok(()) => {}
            Err(Halt::Stop) => {
                stopped = true;
                break;
            }
            Err(Halt::Error(e)) => {
                error = Some(e);
                break;
            }
        }
    }
    let name_of = |t: Target, default: &str| {
        formula
            .target_names
            .iter()
            .find(|(k, _)| *k == t)
            .map_or(default.to_string(), |(_, n)| n.clone())
    };
    let mut parts = Vec::new();
    // The full name wins over its alias when both are set (Azure's rule).
    let (ded_name, ded_value) = match (&ev.dedicated_full, &ev.dedicated_alias) {
        (Some(v), _) => (
            name_of(Target::Dedicated, "$TargetDedicatedNodes"),
            v.clone(),
        ),
        (None, Some(v)) => (
            name_of(Target::DedicatedAlias, "$TargetDedicated"),
            v.clone(),
        ),
        (None, None) => (
            "$TargetDedicatedNodes".to_string(),
            Value::Double(f64::from(inputs.target_dedicated)),
        ),
    };
    parts.push(format!("{ded_name}={}", ev.show(&ded_value)));
    match (&ev.low_priority_full, &ev.low_priority_alias) {
        (Some(v), _) => parts.push(format!(
            "{}={}",
            name_of(Target::LowPriority, "$TargetLowPriorityNodes"),
            ev.show(v)
        )),
        (None, Some(v)) => parts.push(format!(
            "{}={}",
            name_of(Target::LowPriorityAlias, "$TargetLowPriority"),
            ev.show(v)
        )),
        _ => {}
    }
    let dealloc = ev.deallocation.unwrap_or(inputs.deallocation);
    let dealloc_name = if ev.deallocation.is_some() {
        name_of(Target::Deallocation, "$NodeDeallocationOption")
    } else {
        "$NodeDeallocationOption".into()
    };
    parts.push(format!("{dealloc_name}={}", dealloc.name()));
    let mut users: Vec<(&String, &Value)> = formula
        .user_vars
        .iter()
        .zip(&ev.users)
        .filter_map(|(n, v)| v.as_ref().map(|v| (n, v)))
        .collect();
    users.sort_by_key(|(n, _)| n.trim_start_matches('$').to_ascii_lowercase());
    for (n, v) in users {
        parts.push(format!("{n}={}", ev.show(v)));
    }
    let target_dedicated = if error.is_some() {
        None
    } else {
        match (&ev.dedicated_full, &ev.dedicated_alias) {
            (Some(v), _) | (None, Some(v)) => ev.scalar(v),
            _ => None,
        }
    };
    Outcome {
        results: parts.join(";"),
        target_dedicated,
        deallocation: dealloc.name().into(),
        stopped,
        error,
        trace: ev.trace,
        trace_dropped: ev.trace_dropped,
        steps: ev.steps,
    }
}
