//! Lexer and parser: formula text to a checked tree. Names are resolved
//! here (service variable, metric, constant, user variable, deallocation
//! word), so evaluation never meets an unknown name.

use super::lex::{lex, Tok};
use super::metrics::Metric;
use super::{ErrorKind, FormulaError, Pos};

/// Longest formula, in bytes (Azure's limit).
pub const FORMULA_BYTES_MAX: usize = 8 * 1024;
/// Most statements in a formula (Azure's limit); empty ones do not count.
pub const STATEMENTS_MAX: usize = 100;
/// Deepest expression tree; keeps parsing and evaluation off the stack's end.
pub const DEPTH_MAX: usize = 64;

/// The read-write service variables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Dedicated,
    DedicatedAlias,
    LowPriority,
    LowPriorityAlias,
    Deallocation,
}

impl Target {
    fn lookup(name: &str) -> Option<Target> {
        [
            ("$TargetDedicatedNodes", Target::Dedicated),
            ("$TargetDedicated", Target::DedicatedAlias),
            ("$TargetLowPriorityNodes", Target::LowPriority),
            ("$TargetLowPriority", Target::LowPriorityAlias),
            ("$NodeDeallocationOption", Target::Deallocation),
        ]
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, t)| t)
    }
}

/// The words `$NodeDeallocationOption` takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Word {
    Requeue,
    Terminate,
    TaskCompletion,
    RetainedData,
}

impl Word {
    pub fn name(self) -> &'static str {
        match self {
            Word::Requeue => "requeue",
            Word::Terminate => "terminate",
            Word::TaskCompletion => "taskcompletion",
            Word::RetainedData => "retaineddata",
        }
    }
    /// The word, whatever its case.
    pub fn lookup(name: &str) -> Option<Word> {
        [
            Word::Requeue,
            Word::Terminate,
            Word::TaskCompletion,
            Word::RetainedData,
        ]
        .into_iter()
        .find(|w| w.name().eq_ignore_ascii_case(name))
    }
}

/// Ticks (100 ns) per unit, for the `TimeInterval_*` constants.
pub const TICKS_PER_SECOND: i64 = 10_000_000;

fn interval_constant(name: &str) -> Option<i64> {
    let t = match name {
        "TimeInterval_Zero" => 0,
        "TimeInterval_100ns" => 1,
        "TimeInterval_Microsecond" => 10,
        "TimeInterval_Millisecond" => 10_000,
        "TimeInterval_Second" => TICKS_PER_SECOND,
        "TimeInterval_Minute" => 60 * TICKS_PER_SECOND,
        "TimeInterval_Hour" => 3600 * TICKS_PER_SECOND,
        "TimeInterval_Day" => 86_400 * TICKS_PER_SECOND,
        "TimeInterval_Week" => 7 * 86_400 * TICKS_PER_SECOND,
        "TimeInterval_Year" => 365 * 86_400 * TICKS_PER_SECOND,
        _ => return None,
    };
    Some(t)
}

/// Built-in functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Func {
    Avg,
    Len,
    Lg,
    Ln,
    Log,
    Max,
    Min,
    Norm,
    Percentile,
    Rand,
    Range,
    Std,
    Stop,
    Sum,
    Time,
    Val,
}

const FUNCS: [(&str, Func); 16] = [
    ("avg", Func::Avg),
    ("len", Func::Len),
    ("lg", Func::Lg),
    ("ln", Func::Ln),
    ("log", Func::Log),
    ("max", Func::Max),
    ("min", Func::Min),
    ("norm", Func::Norm),
    ("percentile", Func::Percentile),
    ("rand", Func::Rand),
    ("range", Func::Range),
    ("std", Func::Std),
    ("stop", Func::Stop),
    ("sum", Func::Sum),
    ("time", Func::Time),
    ("val", Func::Val),
];

impl Func {
    pub fn name(self) -> &'static str {
        FUNCS
            .iter()
            .find(|(_, f)| *f == self)
            .map_or("?", |(n, _)| n)
    }
    /// Allowed argument counts.
    fn arity(self) -> (usize, usize) {
        match self {
            Func::Rand | Func::Stop => (0, 0),
            Func::Time => (0, 1),
            Func::Percentile | Func::Val => (2, 2),
            Func::Lg | Func::Ln | Func::Log => (1, usize::MAX),
            Func::Len | Func::Sum => (0, usize::MAX),
            _ => (1, usize::MAX),
        }
    }
}

/// Sample methods of the read-only variables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    GetSample,
    GetSamplePeriod,
    Count,
    HistoryBeginTime,
    GetSamplePercent,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::GetSample => "GetSample",
            Method::GetSamplePeriod => "GetSamplePeriod",
            Method::Count => "Count",
            Method::HistoryBeginTime => "HistoryBeginTime",
            Method::GetSamplePercent => "GetSamplePercent",
        }
    }
    fn lookup(name: &str) -> Option<Method> {
        [
            Method::GetSample,
            Method::GetSamplePeriod,
            Method::Count,
            Method::HistoryBeginTime,
            Method::GetSamplePercent,
        ]
        .into_iter()
        .find(|m| m.name().eq_ignore_ascii_case(name))
    }
    fn arity(self) -> (usize, usize) {
        match self {
            Method::GetSample => (1, 3),
            Method::GetSamplePercent => (1, 2),
            _ => (0, 0),
        }
    }
}

/// Fields of a timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Year,
    Month,
    Day,
    Weekday,
    Hour,
    Minute,
    Second,
}

impl Field {
    fn lookup(name: &str) -> Option<Field> {
        Some(match name.to_ascii_lowercase().as_str() {
            "year" => Field::Year,
            "month" => Field::Month,
            "day" => Field::Day,
            "weekday" => Field::Weekday,
            "hour" => Field::Hour,
            "minute" => Field::Minute,
            "second" => Field::Second,
            _ => return None,
        })
    }
}

/// What a name in an expression refers to.
#[derive(Clone, Debug, PartialEq)]
pub enum Var {
    Target(Target),
    Metric(Metric),
    /// Index into the formula's user variables.
    User(usize),
    Interval(i64),
    Word(Word),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnOp {
    Neg,
    Not,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    And,
    Or,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::And => "&&",
            BinOp::Or => "||",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Num(f64),
    Str(String),
    Var(Var, Pos),
    Call(Func, Vec<Expr>, Pos),
    Method(Box<Expr>, Method, Vec<Expr>, Pos),
    Field(Box<Expr>, Field, Pos),
    Unary(UnOp, Box<Expr>, Pos),
    Binary(BinOp, Box<Expr>, Box<Expr>, Pos),
    /// A run of left-associative operators (`a + b - c * d + e`): the
    /// first operand, then each operator with its right side, folded left
    /// to right. Kept flat so that a long sum is not a deep tree: its
    /// depth is that of its deepest operand plus one, and it is evaluated
    /// in a loop, not by recursion.
    Chain(Box<Expr>, Vec<(BinOp, Expr, Pos)>),
    Cond(Box<Expr>, Box<Expr>, Box<Expr>, Pos),
}

/// What a statement assigns to.
#[derive(Clone, Debug, PartialEq)]
pub enum Lhs {
    Target(Target),
    User(usize),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Stmt {
    /// `None` for a bare expression (`stop()`).
    pub lhs: Option<Lhs>,
    /// The name as written, for the results string.
    pub written: String,
    pub expr: Expr,
    pub pos: Pos,
}

/// A parsed, name-checked formula.
#[derive(Clone, Debug, PartialEq)]
pub struct Formula {
    pub statements: Vec<Stmt>,
    /// User variable names as first written, by index.
    pub user_vars: Vec<String>,
    /// Spelling of each read-write variable as first written.
    pub target_names: Vec<(Target, String)>,
}

struct Parser {
    toks: Vec<(Tok, Pos)>,
    at: usize,
    depth: usize,
    user_vars: Vec<String>,
    target_names: Vec<(Target, String)>,
}

type Parsed = (Expr, usize);

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.at].0
    }
    fn pos(&self) -> Pos {
        self.toks[self.at].1
    }
    fn bump(&mut self) -> (Tok, Pos) {
        let t = self.toks[self.at].clone();
        if self.at + 1 < self.toks.len() {
            self.at += 1;
        }
        t
    }
    fn expect(&mut self, want: Tok, context: &str) -> Result<Pos, FormulaError> {
        if *self.peek() == want {
            Ok(self.bump().1)
        } else {
            Err(FormulaError::new(
                ErrorKind::Syntax,
                self.pos(),
                format!(
                    "expected '{}' {context}, found {}",
                    want.symbol(),
                    self.peek().describe()
                ),
            ))
        }
    }
    fn enter(&mut self) -> Result<(), FormulaError> {
        self.depth += 1;
        if self.depth > DEPTH_MAX {
            return Err(too_deep(self.pos()));
        }
        Ok(())
    }

    fn formula(&mut self) -> Result<Vec<Stmt>, FormulaError> {
        let mut statements = Vec::new();
        loop {
            while *self.peek() == Tok::Semi {
                self.bump();
            }
            if *self.peek() == Tok::Eof {
                return Ok(statements);
            }
            if statements.len() == STATEMENTS_MAX {
                return Err(FormulaError::new(
                    ErrorKind::TooManyStatements,
                    self.pos(),
                    format!("a formula holds at most {STATEMENTS_MAX} statements"),
                ));
            }
            statements.push(self.statement()?);
            match self.peek() {
                Tok::Semi | Tok::Eof => {}
                other => {
                    return Err(FormulaError::new(
                        ErrorKind::Syntax,
                        self.pos(),
                        format!(
                            "expected ';' before {}: statements are separated by ';' (a line break does not end one)",
                            other.describe()
                        ),
                    ))
                }
            }
        }
    }

    fn statement(&mut self) -> Result<Stmt, FormulaError> {
        let pos = self.pos();
        if let (Tok::Ident(name), Some((Tok::Assign, _))) =
            (self.peek(), self.toks.get(self.at + 1))
        {
            let name = name.clone();
            self.bump();
            self.bump();
            // The right side is parsed first: `x = x + 1` reads the old x,
            // and an unassigned x is an error, not a silent zero.
            let (expr, _) = self.expr()?;
            let lhs = self.assignable(&name, pos)?;
            return Ok(Stmt {
                lhs: Some(lhs),
                written: name,
                expr,
                pos,
            });
        }
        let (expr, _) = self.expr()?;
        Ok(Stmt {
            lhs: None,
            written: String::new(),
            expr,
            pos,
        })
    }

    fn assignable(&mut self, name: &str, pos: Pos) -> Result<Lhs, FormulaError> {
        if let Some(t) = Target::lookup(name) {
            if !self.target_names.iter().any(|(k, _)| *k == t) {
                self.target_names.push((t, name.to_string()));
            }
            return Ok(Lhs::Target(t));
        }
        if let Some(m) = Metric::lookup(name) {
            return Err(FormulaError::new(
                ErrorKind::ReadOnly,
                pos,
                format!(
                    "{name} is read-only ({}); only $TargetDedicatedNodes, $TargetLowPriorityNodes and $NodeDeallocationOption can be assigned",
                    m.meaning()
                ),
            ));
        }
        if interval_constant(name).is_some() {
            return Err(FormulaError::new(
                ErrorKind::ReadOnly,
                pos,
                format!("{name} is a constant and cannot be assigned"),
            ));
        }
        let hint = if name.starts_with('$') {
            suggest_service(name)
        } else {
            String::new()
        };
        if !hint.is_empty() {
            return Err(FormulaError::new(
                ErrorKind::UnknownVariable,
                pos,
                format!("{name} is not a service variable{hint}"),
            ));
        }
        let idx = match self.user_vars.iter().position(|v| v == name) {
            Some(i) => i,
            None => {
                self.user_vars.push(name.to_string());
                self.user_vars.len() - 1
            }
        };
        Ok(Lhs::User(idx))
    }

    fn expr(&mut self) -> Result<Parsed, FormulaError> {
        self.enter()?;
        let (cond, d) = self.binary(0)?;
        let out = if *self.peek() == Tok::Question {
            let pos = self.bump().1;
            let (a, da) = self.expr()?;
            self.expect(Tok::Colon, "in 'condition ? then : else'")?;
            let (b, db) = self.expr()?;
            let depth = 1 + d.max(da).max(db);
            check_depth(depth, pos)?;
            (
                Expr::Cond(Box::new(cond), Box::new(a), Box::new(b), pos),
                depth,
            )
        } else {
            (cond, d)
        };
        self.depth -= 1;
        Ok(out)
    }

    /// Precedence climbing: one frame per operator, not one per level, so
    /// deep parentheses cost little stack. The operators this loop takes
    /// fold left to right, so they make one flat [`Expr::Chain`].
    fn binary(&mut self, min_prec: u8) -> Result<Parsed, FormulaError> {
        let (first, first_depth) = self.unary()?;
        let mut rest = Vec::new();
        let mut depth = first_depth;
        while let Some((op, prec)) = binop(self.peek()) {
            if prec < min_prec {
                break;
            }
            let pos = self.bump().1;
            self.enter()?;
            let (right, dr) = self.binary(prec + 1)?;
            self.depth -= 1;
            depth = depth.max(1 + dr);
            check_depth(depth, pos)?;
            rest.push((op, right, pos));
        }
        Ok(match rest.len() {
            0 => (first, first_depth),
            1 => {
                let (op, right, pos) = rest.pop().expect("one operator");
                (
                    Expr::Binary(op, Box::new(first), Box::new(right), pos),
                    depth.max(first_depth + 1),
                )
            }
            _ => (
                Expr::Chain(Box::new(first), rest),
                depth.max(first_depth + 1),
            ),
        })
    }

    fn unary(&mut self) -> Result<Parsed, FormulaError> {
        let op = match self.peek() {
            Tok::Minus => UnOp::Neg,
            Tok::Bang => UnOp::Not,
            _ => return self.postfix(),
        };
        self.enter()?;
        let pos = self.bump().1;
        let (e, d) = self.unary()?;
        self.depth -= 1;
        Ok((Expr::Unary(op, Box::new(e), pos), d + 1))
    }

    fn postfix(&mut self) -> Result<Parsed, FormulaError> {
        let (mut e, mut depth) = self.primary()?;
        while *self.peek() == Tok::Dot {
            self.bump();
            let (tok, pos) = self.bump();
            let Tok::Ident(name) = tok else {
                return Err(FormulaError::new(
                    ErrorKind::Syntax,
                    pos,
                    format!(
                        "expected a field or method name after '.', found {}",
                        tok.describe()
                    ),
                ));
            };
            depth += 1;
            check_depth(depth, pos)?;
            if *self.peek() == Tok::LParen {
                let Some(method) = Method::lookup(&name) else {
                    return Err(FormulaError::new(
                        ErrorKind::UnknownFunction,
                        pos,
                        format!("unknown method {name}; the sample methods are GetSample, GetSamplePercent, GetSamplePeriod, Count and HistoryBeginTime"),
                    ));
                };
                let (args, d) = self.args(method.name(), method.arity(), pos)?;
                depth = depth.max(d + 1);
                e = Expr::Method(Box::new(e), method, args, pos);
            } else {
                let Some(field) = Field::lookup(&name) else {
                    return Err(FormulaError::new(
                        ErrorKind::UnknownVariable,
                        pos,
                        format!("unknown field {name}; a timestamp has year, month, day, weekday, hour, minute and second"),
                    ));
                };
                e = Expr::Field(Box::new(e), field, pos);
            }
        }
        Ok((e, depth))
    }

    fn args(
        &mut self,
        name: &str,
        (min, max): (usize, usize),
        pos: Pos,
    ) -> Result<(Vec<Expr>, usize), FormulaError> {
        self.expect(Tok::LParen, "")?;
        let mut args = Vec::new();
        let mut depth = 0;
        if *self.peek() != Tok::RParen {
            loop {
                let (a, d) = self.expr()?;
                depth = depth.max(d);
                args.push(a);
                if *self.peek() == Tok::Comma {
                    self.bump();
                } else {
                    break;
                }
            }
        }
        self.expect(Tok::RParen, &format!("to close the arguments of {name}"))?;
        if args.len() < min || args.len() > max {
            let want = if min == max {
                format!("{min}")
            } else if max == usize::MAX {
                format!("at least {min}")
            } else {
                format!("{min} to {max}")
            };
            return Err(FormulaError::new(
                ErrorKind::Arity,
                pos,
                format!("{name} takes {want} arguments; {} given", args.len()),
            ));
        }
        Ok((args, depth))
    }

    fn primary(&mut self) -> Result<Parsed, FormulaError> {
        let (tok, pos) = self.bump();
        match tok {
            Tok::Num(n) => Ok((Expr::Num(n), 1)),
            Tok::Str(s) => Ok((Expr::Str(s), 1)),
            Tok::LParen => {
                let (e, d) = self.expr()?;
                self.expect(Tok::RParen, "to close '('")?;
                Ok((e, d))
            }
            Tok::Ident(name) => {
                if *self.peek() == Tok::LParen {
                    let Some(func) = FUNCS
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case(&name))
                        .map(|(_, f)| *f)
                    else {
                        let names: Vec<&str> = FUNCS.iter().map(|(n, _)| *n).collect();
                        return Err(FormulaError::new(
                            ErrorKind::UnknownFunction,
                            pos,
                            format!(
                                "unknown function {name}; the functions are {}",
                                names.join(", ")
                            ),
                        ));
                    };
                    let (args, d) = self.args(func.name(), func.arity(), pos)?;
                    return Ok((Expr::Call(func, args, pos), d + 1));
                }
                Ok((Expr::Var(self.resolve(&name, pos)?, pos), 1))
            }
            other => Err(FormulaError::new(
                ErrorKind::Syntax,
                pos,
                format!("expected a value, found {}", other.describe()),
            )),
        }
    }

    fn resolve(&mut self, name: &str, pos: Pos) -> Result<Var, FormulaError> {
        if let Some(i) = self.user_vars.iter().position(|v| v == name) {
            return Ok(Var::User(i));
        }
        if let Some(t) = Target::lookup(name) {
            return Ok(Var::Target(t));
        }
        if let Some(m) = Metric::lookup(name) {
            return Ok(Var::Metric(m));
        }
        if let Some(t) = interval_constant(name) {
            return Ok(Var::Interval(t));
        }
        if let Some(w) = Word::lookup(name) {
            return Ok(Var::Word(w));
        }
        let hint = if name.starts_with('$') {
            suggest_service(name)
        } else if name.starts_with("TimeInterval") || name.starts_with("TimeZoneInterval") {
            let unit = name.rsplit('_').next().unwrap_or("");
            let near = format!("TimeInterval_{unit}");
            if interval_constant(&near).is_some() {
                format!("; did you mean {near}?")
            } else {
                ". The constants are TimeInterval_Zero, _100ns, _Microsecond, _Millisecond, _Second, _Minute, _Hour, _Day, _Week and _Year".into()
            }
        } else {
            String::new()
        };
        Err(FormulaError::new(
            ErrorKind::UnknownVariable,
            pos,
            format!("unknown variable {name}: it is read before any statement assigns it{hint}"),
        ))
    }
}

/// Binary operators and their precedence, loosest first (C's order).
fn binop(t: &Tok) -> Option<(BinOp, u8)> {
    Some(match t {
        Tok::OrOr => (BinOp::Or, 0),
        Tok::AndAnd => (BinOp::And, 1),
        Tok::EqEq => (BinOp::Eq, 2),
        Tok::Ne => (BinOp::Ne, 2),
        Tok::Lt => (BinOp::Lt, 3),
        Tok::Le => (BinOp::Le, 3),
        Tok::Gt => (BinOp::Gt, 3),
        Tok::Ge => (BinOp::Ge, 3),
        Tok::Plus => (BinOp::Add, 4),
        Tok::Minus => (BinOp::Sub, 4),
        Tok::Star => (BinOp::Mul, 5),
        Tok::Slash => (BinOp::Div, 5),
        _ => return None,
    })
}

fn too_deep(pos: Pos) -> FormulaError {
    FormulaError::new(
        ErrorKind::TooDeep,
        pos,
        format!("expression is nested more than {DEPTH_MAX} levels deep"),
    )
}

fn check_depth(depth: usize, pos: Pos) -> Result<(), FormulaError> {
    if depth > DEPTH_MAX {
        Err(too_deep(pos))
    } else {
        Ok(())
    }
}

fn suggest_service(name: &str) -> String {
    let mut best: Option<(usize, &str)> = None;
    let candidates = Metric::ALL.iter().map(|m| m.name()).chain([
        "$TargetDedicatedNodes",
        "$TargetLowPriorityNodes",
        "$NodeDeallocationOption",
    ]);
    for c in candidates {
        let d = edit_distance(name.as_bytes(), c.as_bytes());
        if d <= 2 && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map_or(String::new(), |(_, c)| format!("; did you mean {c}?"))
}

/// Levenshtein distance ignoring ASCII case, capped: anything over 2 is 3.
/// Runs on every new `$` variable, so no allocation.
fn edit_distance(a: &[u8], b: &[u8]) -> usize {
    const CAP: usize = 3;
    const LEN: usize = 64;
    if a.len().abs_diff(b.len()) >= CAP || a.len() >= LEN || b.len() >= LEN {
        return CAP;
    }
    let mut prev = [0usize; LEN];
    let mut cur = [0usize; LEN];
    for (j, p) in prev.iter_mut().enumerate().take(b.len() + 1) {
        *p = j;
    }
    for i in 1..=a.len() {
        cur[0] = i;
        let mut row_min = cur[0];
        for j in 1..=b.len() {
            let cost = usize::from(!a[i - 1].eq_ignore_ascii_case(&b[j - 1]));
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            row_min = row_min.min(cur[j]);
        }
        if row_min >= CAP {
            return CAP;
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()].min(CAP)
}

/// Parses and name-checks a formula.
pub fn parse(text: &str) -> Result<Formula, FormulaError> {
    // Windows editors start a UTF-8 file with a byte-order mark.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.len() > FORMULA_BYTES_MAX {
        return Err(FormulaError::new(
            ErrorKind::TooLong,
            Pos { line: 1, col: 1 },
            format!(
                "formula is {} bytes; at most {FORMULA_BYTES_MAX}",
                text.len()
            ),
        ));
    }
    let toks = lex(text)?;
    let mut p = Parser {
        toks,
        at: 0,
        depth: 0,
        user_vars: Vec::new(),
        target_names: Vec::new(),
    };
    let statements = p.formula()?;
    if statements.is_empty() {
        return Err(FormulaError::new(
            ErrorKind::Syntax,
            Pos { line: 1, col: 1 },
            "formula has no statements; e.g. $TargetDedicatedNodes = 2;",
        ));
    }
    Ok(Formula {
        statements,
        user_vars: p.user_vars,
        target_names: p.target_names,
    })
}
