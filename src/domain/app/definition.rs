//! An app definition (`app.toml`): what a publisher declares about a
//! program so that users can run it with parameters and files without
//! thinking about tasks. Parsing reports every problem at once, each with
//! its line, before anything is stored.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::domain::spec::validate_package_name;

/// Most parameters one app declares (each becomes a job metadata item).
pub const PARAMETERS_MAX: usize = 48;
/// Most stages of one app.
pub const STAGES_MAX: usize = 16;
/// Longest string parameter value, in bytes.
pub const STRING_VALUE_MAX: usize = 1024;
/// Longest app definition, in bytes.
pub const DEFINITION_BYTES_MAX: usize = 64 * 1024;

/// A published app version's definition, checked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AppDefinition {
    /// The app's name; also the id of its application package.
    pub name: String,
    /// The version; also the version of its application package.
    pub version: String,
    pub description: String,
    /// In the order the file declares them.
    pub parameters: Vec<Parameter>,
    pub split: Split,
    pub stages: Vec<Stage>,
    pub outcomes: Outcomes,
    pub merge: Option<Merge>,
    /// Slots each task takes on its node.
    pub slots: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Parameter {
    pub name: String,
    pub kind: ParamKind,
    pub required: bool,
    /// Used when a run gives no value (never with `required`).
    pub default: Option<String>,
    pub description: String,
}

/// A parameter's type, with its bounds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ParamKind {
    Integer {
        min: Option<i64>,
        max: Option<i64>,
    },
    Number {
        min: Option<f64>,
        max: Option<f64>,
    },
    String {
        max_len: Option<u32>,
    },
    Boolean,
    Choice {
        choices: Vec<String>,
    },
    /// One of the run's input files, named by its file name.
    File,
}

impl ParamKind {
    pub fn word(&self) -> &'static str {
        match self {
            ParamKind::Integer { .. } => "integer",
            ParamKind::Number { .. } => "number",
            ParamKind::String { .. } => "string",
            ParamKind::Boolean => "boolean",
            ParamKind::Choice { .. } => "choice",
            ParamKind::File => "file",
        }
    }
}

/// How a run becomes tasks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// One task.
    Single,
    /// One task per `chunk` integers of `from..=to` (two integer
    /// parameters): `{range.from}` and `{range.to}` in the command.
    Range {
        from: String,
        to: String,
        chunk: u64,
    },
    /// One task per input file whose name matches `pattern`: `{file}`.
    Files { pattern: String },
    /// One task per non-empty line of the file parameter `parameter`:
    /// `{line}`.
    Lines { parameter: String },
    /// A program of the package that runs as the job's manager and adds
    /// the tasks itself (with `lote task add`, as the job's manager).
    Splitter { command: String },
}

/// What a file a task leaves is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    /// Part of the job's result: given to the merge.
    Output,
    /// A small picture of this task's result.
    Preview,
    /// Kept for diagnosis, uploaded even when the task fails.
    Log,
    /// Handed to the next stage's tasks.
    Intermediate,
}

impl OutputKind {
    pub fn word(self) -> &'static str {
        match self {
            OutputKind::Output => "output",
            OutputKind::Preview => "preview",
            OutputKind::Log => "log",
            OutputKind::Intermediate => "intermediate",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AppOutput {
    /// Glob relative to the task's working directory.
    pub pattern: String,
    pub kind: OutputKind,
}

/// One stage: its tasks start once every task of the stage before ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Stage {
    pub name: String,
    /// Shell command line with `{placeholders}`.
    pub command: String,
    pub outputs: Vec<AppOutput>,
    /// One task for the whole run instead of one per split item.
    pub single: bool,
}

/// How a processor's exit code reads: 0 succeeded, a code in
/// `retry_exit_codes` is a retryable failure (run again, up to
/// `max_retries` times), any other a permanent one (not run again).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Outcomes {
    pub retry_exit_codes: Vec<i32>,
    pub max_retries: u32,
}

/// The step after every processing task succeeded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Merge {
    pub command: String,
    /// The file (in the merge's working directory) that is the job's result.
    pub output: String,
    /// An optional picture of the result.
    pub preview: Option<String>,
}

/// One problem of a definition, with its 1-based line (0: the whole file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "app.toml: {}", self.message)
        } else {
            write!(f, "app.toml line {}: {}", self.line, self.message)
        }
    }
}

/// Every problem on its own line, for a rejection's detail.
pub fn problems_text(problems: &[Problem]) -> String {
    let list: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    format!(
        "{} problem{}:\n{}",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" },
        list.join("\n")
    )
}

// The file as written: spans kept where a later check needs a line.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    name: Spanned<String>,
    version: Spanned<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    slots: Option<Spanned<u32>>,
    #[serde(default)]
    parameters: BTreeMap<String, Spanned<RawParam>>,
    #[serde(default)]
    split: Option<Spanned<RawSplit>>,
    #[serde(default)]
    stages: Vec<Spanned<RawStage>>,
    #[serde(default)]
    outcomes: Option<Spanned<RawOutcomes>>,
    #[serde(default)]
    merge: Option<Spanned<RawMerge>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParam {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    default: Option<toml::Value>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    min: Option<toml::Value>,
    #[serde(default)]
    max: Option<toml::Value>,
    #[serde(default)]
    max_len: Option<u32>,
    #[serde(default)]
    choices: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSplit {
    #[serde(default)]
    range: Option<RawRange>,
    #[serde(default)]
    files: Option<String>,
    #[serde(default)]
    lines: Option<String>,
    #[serde(default)]
    splitter: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRange {
    from: String,
    to: String,
    #[serde(default = "one")]
    chunk: u64,
}

fn one() -> u64 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    #[serde(default)]
    name: Option<String>,
    command: Spanned<String>,
    #[serde(default)]
    outputs: Vec<Spanned<RawOutput>>,
    #[serde(default)]
    single: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    pattern: String,
    kind: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutcomes {
    #[serde(default)]
    retry_exit_codes: Vec<i32>,
    #[serde(default)]
    max_retries: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMerge {
    command: Spanned<String>,
    output: String,
    #[serde(default)]
    preview: Option<String>,
}

/// Line numbers of byte offsets in one text.
struct Lines<'a>(&'a str);

impl Lines<'_> {
    fn of(&self, offset: usize) -> usize {
        self.0[..offset.min(self.0.len())].matches('\n').count() + 1
    }
}

struct Checker<'a> {
    lines: Lines<'a>,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn at(&mut self, span: std::ops::Range<usize>, message: impl Into<String>) {
        let line = self.lines.of(span.start);
        self.problems.push(Problem {
            line,
            message: message.into(),
        });
    }
}

/// Parses and checks a definition. Every problem found is returned, not
/// only the first.
pub fn parse(text: &str) -> Result<AppDefinition, Vec<Problem>> {
    if text.len() > DEFINITION_BYTES_MAX {
        return Err(vec![Problem {
            line: 0,
            message: format!(
                "is {} bytes; an app definition is at most {DEFINITION_BYTES_MAX}",
                text.len()
            ),
        }]);
    }
    let lines = Lines(text);
    let raw: RawFile = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let line = e.span().map_or(0, |s| lines.of(s.start));
            return Err(vec![Problem {
                line,
                message: e.message().trim().to_string(),
            }]);
        }
    };
    let mut c = Checker {
        lines,
        problems: vec![],
    };
    let name = raw.name.get_ref().clone();
    if let Err(e) = validate_package_name("app name", &name, false) {
        c.at(raw.name.span(), e.detail);
    }
    let version = raw.version.get_ref().clone();
    if let Err(e) = validate_package_name("app version", &version, true) {
        c.at(raw.version.span(), e.detail);
    }
    let parameters = parameters(&mut c, raw.parameters);
    let split = split(&mut c, raw.split, &parameters);
    let stages = stages(&mut c, raw.stages, &parameters, &split);
    let outcomes = match raw.outcomes {
        None => Outcomes {
            retry_exit_codes: vec![],
            max_retries: 2,
        },
        Some(o) => {
            let span = o.span();
            let o = o.into_inner();
            if o.retry_exit_codes.contains(&0) {
                c.at(
                    span.clone(),
                    "exit code 0 is success; it cannot ask for a retry",
                );
            }
            let max_retries = o.max_retries.unwrap_or(2);
            if max_retries > 100 {
                c.at(span, format!("max_retries {max_retries} is over 100"));
            }
            Outcomes {
                retry_exit_codes: o.retry_exit_codes,
                max_retries,
            }
        }
    };
    let merge = raw.merge.map(|m| {
        let span = m.span();
        if matches!(split, Split::Splitter { .. }) {
            c.at(
                span.clone(),
                "a splitter adds its tasks, and so its merge too (a task that depends on them); an app with a splitter declares no [merge]",
            );
        }
        let m = m.into_inner();
        let known = placeholders(&parameters, &Split::Single, true);
        check_command(&mut c, &m.command, &known);
        for (what, file) in [("output", Some(&m.output)), ("preview", m.preview.as_ref())] {
            if let Some(file) = file {
                if file.is_empty() || file.contains('/') || file == "." || file == ".." {
                    c.at(
                        span.clone(),
                        format!("merge {what} {file:?} must be a file name in the merge's working directory"),
                    );
                }
            }
        }
        Merge {
            command: m.command.into_inner(),
            output: m.output,
            preview: m.preview,
        }
    });
    let slots = match raw.slots {
        Some(s) if *s.get_ref() == 0 || *s.get_ref() > 1024 => {
            c.at(s.span(), "slots must be 1 to 1024");
            1
        }
        Some(s) => s.into_inner(),
        None => 1,
    };
    if c.problems.is_empty() {
        Ok(AppDefinition {
            name,
            version,
            description: raw.description,
            parameters,
            split,
            stages,
            outcomes,
            merge,
            slots,
        })
    } else {
        c.problems.sort_by_key(|p| p.line);
        Err(c.problems)
    }
}

fn parameters(c: &mut Checker, raw: BTreeMap<String, Spanned<RawParam>>) -> Vec<Parameter> {
    let mut raw: Vec<(String, Spanned<RawParam>)> = raw.into_iter().collect();
    raw.sort_by_key(|(_, p)| p.span().start);
    if raw.len() > PARAMETERS_MAX {
        c.at(
            raw[PARAMETERS_MAX].1.span(),
            format!("an app declares at most {PARAMETERS_MAX} parameters"),
        );
    }
    let mut out = vec![];
    for (name, p) in raw {
        let span = p.span();
        let p = p.into_inner();
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            || reserved(&name)
        {
            c.at(
                span.clone(),
                format!("parameter name {name:?} must be 1-64 letters, digits, '_' or '-', and not one of index, task, job, app, file, line, range"),
            );
        }
        let number = |v: &Option<toml::Value>| -> Option<f64> {
            v.as_ref()
                .and_then(|v| v.as_float().or(v.as_integer().map(|i| i as f64)))
        };
        let int = |v: &Option<toml::Value>| v.as_ref().and_then(|v| v.as_integer());
        let kind = match p.kind.as_str() {
            "integer" => ParamKind::Integer {
                min: int(&p.min),
                max: int(&p.max),
            },
            "number" => ParamKind::Number {
                min: number(&p.min),
                max: number(&p.max),
            },
            "string" => ParamKind::String { max_len: p.max_len },
            "boolean" => ParamKind::Boolean,
            "choice" => {
                if p.choices.is_empty() {
                    c.at(
                        span.clone(),
                        format!("choice parameter {name} lists no choices"),
                    );
                }
                ParamKind::Choice {
                    choices: p.choices.clone(),
                }
            }
            "file" => ParamKind::File,
            other => {
                c.at(
                    span.clone(),
                    format!("parameter {name}: type {other:?} is not one of integer, number, string, boolean, choice, file"),
                );
                continue;
            }
        };
        if (p.min.is_some() || p.max.is_some())
            && !matches!(kind, ParamKind::Integer { .. } | ParamKind::Number { .. })
        {
            c.at(
                span.clone(),
                format!("parameter {name}: min and max are for integer and number parameters"),
            );
        }
        if matches!(kind, ParamKind::Integer { .. })
            && (p.min.as_ref().is_some_and(|v| v.as_integer().is_none())
                || p.max.as_ref().is_some_and(|v| v.as_integer().is_none()))
        {
            c.at(
                span.clone(),
                format!("parameter {name}: an integer's min and max are integers"),
            );
        }
        let default = p.default.as_ref().map(|v| match v {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        if p.required && default.is_some() {
            c.at(
                span.clone(),
                format!("parameter {name} is required and has a default; choose one"),
            );
        }
        if matches!(kind, ParamKind::File) && default.is_some() {
            c.at(
                span.clone(),
                format!("file parameter {name} cannot have a default"),
            );
        }
        let param = Parameter {
            name: name.clone(),
            kind,
            required: p.required,
            default,
            description: p.description,
        };
        if let Some(d) = &param.default {
            if let Err(why) = check_value(&param, d) {
                c.at(
                    span.clone(),
                    format!("parameter {name}: default {d:?} {why}"),
                );
            }
        }
        out.push(param);
    }
    out
}

/// Whether `value` is a valid value of `param`; the reason if not.
pub fn check_value(param: &Parameter, value: &str) -> Result<(), String> {
    match &param.kind {
        ParamKind::Integer { min, max } => {
            let v: i64 = value
                .trim()
                .parse()
                .map_err(|_| "is not an integer".to_string())?;
            bounds(v as f64, min.map(|m| m as f64), max.map(|m| m as f64))
        }
        ParamKind::Number { min, max } => {
            let v: f64 = value
                .trim()
                .parse()
                .map_err(|_| "is not a number".to_string())?;
            if !v.is_finite() {
                return Err("is not a finite number".into());
            }
            bounds(v, *min, *max)
        }
        ParamKind::String { max_len } => {
            let max = max_len.map_or(STRING_VALUE_MAX, |m| (m as usize).min(STRING_VALUE_MAX));
            if value.len() > max {
                Err(format!("is {} bytes; at most {max}", value.len()))
            } else if value.contains('\0') {
                Err("contains a NUL byte".into())
            } else {
                Ok(())
            }
        }
        ParamKind::Boolean => match value {
            "true" | "false" => Ok(()),
            _ => Err("is not true or false".into()),
        },
        ParamKind::Choice { choices } => {
            if choices.iter().any(|c| c == value) {
                Ok(())
            } else {
                Err(format!("is not one of {}", choices.join(", ")))
            }
        }
        ParamKind::File => Ok(()),
    }
}

fn bounds(v: f64, min: Option<f64>, max: Option<f64>) -> Result<(), String> {
    match (min, max) {
        (Some(lo), _) if v < lo => Err(format!("is below the minimum {lo}")),
        (_, Some(hi)) if v > hi => Err(format!("is above the maximum {hi}")),
        _ => Ok(()),
    }
}

/// Names placeholders use for themselves.
fn reserved(name: &str) -> bool {
    matches!(
        name,
        "index" | "task" | "job" | "app" | "file" | "line" | "range"
    )
}

fn split(c: &mut Checker, raw: Option<Spanned<RawSplit>>, params: &[Parameter]) -> Split {
    let Some(raw) = raw else {
        return Split::Single;
    };
    let span = raw.span();
    let raw = raw.into_inner();
    let given = [
        raw.range.is_some(),
        raw.files.is_some(),
        raw.lines.is_some(),
        raw.splitter.is_some(),
    ]
    .iter()
    .filter(|g| **g)
    .count();
    if given != 1 {
        c.at(
            span.clone(),
            "[split] names exactly one of range, files, lines or splitter",
        );
        return Split::Single;
    }
    let param = |name: &str| params.iter().find(|p| p.name == name);
    if let Some(r) = raw.range {
        for end in [&r.from, &r.to] {
            match param(end) {
                Some(p) if matches!(p.kind, ParamKind::Integer { .. }) => {}
                _ => c.at(
                    span.clone(),
                    format!("split range: {end:?} is not an integer parameter"),
                ),
            }
        }
        if r.chunk == 0 {
            c.at(span, "split range: chunk must be at least 1");
        }
        return Split::Range {
            from: r.from,
            to: r.to,
            chunk: r.chunk.max(1),
        };
    }
    if let Some(pattern) = raw.files {
        if let Err(e) = glob::Pattern::new(&pattern) {
            c.at(
                span,
                format!("split files: {pattern:?} is not a pattern: {e}"),
            );
        }
        return Split::Files { pattern };
    }
    if let Some(parameter) = raw.lines {
        if !param(&parameter).is_some_and(|p| p.kind == ParamKind::File) {
            c.at(
                span,
                format!("split lines: {parameter:?} is not a file parameter"),
            );
        }
        return Split::Lines { parameter };
    }
    let command = raw.splitter.unwrap_or_default();
    let known = placeholders(params, &Split::Single, true);
    check_command(c, &Spanned::new(span, command.clone()), &known);
    Split::Splitter { command }
}

fn stages(
    c: &mut Checker,
    raw: Vec<Spanned<RawStage>>,
    params: &[Parameter],
    split: &Split,
) -> Vec<Stage> {
    if raw.is_empty() && !matches!(split, Split::Splitter { .. }) {
        c.at(0..0, "no [[stages]]: an app runs at least one command");
    }
    if matches!(split, Split::Splitter { .. }) && !raw.is_empty() {
        c.at(
            raw[0].span(),
            "a splitter adds the tasks itself; an app with one declares no [[stages]]",
        );
    }
    if raw.len() > STAGES_MAX {
        c.at(
            raw[STAGES_MAX].span(),
            format!("at most {STAGES_MAX} stages"),
        );
    }
    let mut out = vec![];
    for (i, s) in raw.into_iter().enumerate() {
        let span = s.span();
        let s = s.into_inner();
        let known = placeholders(params, split, s.single);
        check_command(c, &s.command, &known);
        let mut outputs = vec![];
        for o in s.outputs {
            let ospan = o.span();
            let o = o.into_inner();
            let kind = match o.kind.as_str() {
                "output" => OutputKind::Output,
                "preview" => OutputKind::Preview,
                "log" => OutputKind::Log,
                "intermediate" => OutputKind::Intermediate,
                other => {
                    c.at(ospan, format!("output kind {other:?} is not one of output, preview, log, intermediate"));
                    continue;
                }
            };
            if let Err(e) = crate::domain::spec::validate_relative_path("output", &o.pattern) {
                c.at(ospan.clone(), e.detail);
            }
            if let Err(e) = glob::Pattern::new(&o.pattern) {
                c.at(
                    ospan,
                    format!("output {:?} is not a pattern: {e}", o.pattern),
                );
            }
            outputs.push(AppOutput {
                pattern: o.pattern,
                kind,
            });
        }
        let name = s.name.unwrap_or_else(|| format!("stage-{}", i + 1));
        if name.is_empty() || name.len() > 64 {
            c.at(span, "a stage's name is 1-64 bytes");
        }
        out.push(Stage {
            name,
            command: s.command.into_inner(),
            outputs,
            single: s.single,
        });
    }
    out
}

/// The placeholders a command may use.
fn placeholders(params: &[Parameter], split: &Split, single: bool) -> Vec<String> {
    let mut known: Vec<String> = params.iter().map(|p| p.name.clone()).collect();
    known.extend(["index", "task", "job", "app"].map(String::from));
    if !single {
        match split {
            Split::Range { .. } => known.extend(["range.from", "range.to"].map(String::from)),
            Split::Files { .. } => known.push("file".into()),
            Split::Lines { .. } => known.push("line".into()),
            Split::Single | Split::Splitter { .. } => {}
        }
    }
    known
}

fn check_command(c: &mut Checker, command: &Spanned<String>, known: &[String]) {
    if command.get_ref().trim().is_empty() {
        c.at(command.span(), "the command is empty");
        return;
    }
    for name in placeholder_names(command.get_ref()) {
        if !known.contains(&name) {
            c.at(
                command.span(),
                format!(
                    "unknown placeholder {{{name}}}; this command may use {}",
                    known
                        .iter()
                        .map(|k| format!("{{{k}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
    }
}

/// The `{name}` placeholders of a command: a `{` right after `$` is the
/// shell's (`${VAR}`), and `{{` is a literal brace.
pub fn placeholder_names(command: &str) -> Vec<String> {
    let mut out = vec![];
    each_placeholder(command, |p| {
        out.push(p.to_string());
        String::new()
    });
    out
}

/// The command with each placeholder replaced by `value(name)`.
pub fn each_placeholder(command: &str, mut value: impl FnMut(&str) -> String) -> String {
    let mut out = String::with_capacity(command.len());
    let bytes = command.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'{' && bytes.get(i + 1) == Some(&b'{') {
            out.push('{');
            i += 2;
            continue;
        }
        if b == b'}' && bytes.get(i + 1) == Some(&b'}') {
            out.push('}');
            i += 2;
            continue;
        }
        if b == b'{' && (i == 0 || bytes[i - 1] != b'$') {
            if let Some(end) = command[i + 1..].find('}') {
                let name = &command[i + 1..i + 1 + end];
                if !name.is_empty()
                    && name
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-' || c == b'.')
                {
                    out.push_str(&value(name));
                    i += end + 2;
                    continue;
                }
            }
        }
        let ch = command[i..].chars().next().unwrap_or(' ');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}
