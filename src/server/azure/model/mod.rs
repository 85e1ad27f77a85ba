//! Azure Batch's JSON, both ways: lote's pools, nodes, jobs and tasks as
//! the SDK reads them (camelCase, lowercase state strings, RFC 3339 times,
//! ISO 8601 durations), and Azure's create bodies as lote specs. Fields
//! lote has no use for are accepted and ignored; fields it cannot honour
//! are refused with Azure's `InvalidPropertyValue` naming them.

mod jobs;
mod pools;

use serde_json::{json, Value};

pub use jobs::*;
pub use pools::*;

use crate::domain::spec::{CommandLine, PackageRef, ResourceFile, ResourceSource};
use crate::domain::EnvVar;
use crate::types::Timestamp;

/// A refusal of a body: Azure's code and the property.
#[derive(Debug)]
pub struct Invalid {
    pub code: &'static str,
    pub message: String,
}

pub fn invalid(property: &str, why: impl Into<String>) -> Invalid {
    Invalid {
        code: "InvalidPropertyValue",
        message: format!("{property}: {}", why.into()),
    }
}
/// An entity's ETag: its stream version.
pub fn etag(version: u64) -> String {
    format!("0x{version:X}")
}

fn time(t: &Option<Timestamp>) -> Value {
    t.map_or(Value::Null, |t| Value::String(t.to_string()))
}

/// ISO 8601 duration from seconds (`PT1H2M3S`; zero `PT0S`).
pub fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    let mut out = String::from("P");
    if d > 0 {
        out.push_str(&format!("{d}D"));
    }
    out.push('T');
    if h > 0 {
        out.push_str(&format!("{h}H"));
    }
    if m > 0 {
        out.push_str(&format!("{m}M"));
    }
    if s > 0 || (h == 0 && m == 0) {
        out.push_str(&format!("{s}S"));
    }
    out
}

/// Seconds of an ISO 8601 duration as the SDK sends them (`PT01H00M00S`,
/// `P1DT02H00M00S`, `PT01.5S`, `P`), rounded up.
pub fn parse_duration(text: &str) -> Option<u64> {
    let rest = text.strip_prefix('P')?;
    let (date, time) = rest.split_once('T').unwrap_or((rest, ""));
    let mut secs = 0f64;
    let mut number = String::new();
    for (part, units) in [
        (date, [('D', 86400.0), ('W', 604800.0), ('\0', 0.0)]),
        (time, [('H', 3600.0), ('M', 60.0), ('S', 1.0)]),
    ] {
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' {
                number.push(c);
                continue;
            }
            let unit = units.iter().find(|(u, _)| *u == c)?.1;
            secs += number.parse::<f64>().ok()? * unit;
            number.clear();
        }
        if !number.is_empty() {
            return None;
        }
    }
    (secs.is_finite() && secs >= 0.0).then(|| secs.ceil() as u64)
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// A boolean property; `default` when absent (or not a boolean).
fn flag(v: &Value, key: &str, default: bool) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(default)
}

fn u32_of(v: &Value, key: &str) -> Result<Option<u32>, Invalid> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| invalid(key, "is not a whole number")),
    }
}

fn duration_of(v: &Value, key: &str) -> Result<Option<u64>, Invalid> {
    match str_of(v, key) {
        None => Ok(None),
        Some(t) => parse_duration(t)
            .map(Some)
            .ok_or_else(|| invalid(key, format!("{t:?} is not an ISO 8601 duration"))),
    }
}

/// Splits a command line the way a POSIX shell splits words (quotes and
/// backslashes), without running one: Azure runs a command line without
/// a shell.
pub fn split_words(line: &str) -> Result<Vec<String>, Invalid> {
    let mut words = vec![];
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(invalid("commandLine", "a ' is not closed")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(invalid("commandLine", "a \" is not closed")),
                        },
                        Some(c) => word.push(c),
                        None => return Err(invalid("commandLine", "a \" is not closed")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    word.push(c);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    if words.is_empty() {
        return Err(invalid("commandLine", "is empty"));
    }
    Ok(words)
}

fn command_text(c: &CommandLine) -> String {
    match c {
        CommandLine::Shell(s) => format!("/bin/sh -c {}", crate::domain::app::submit::quote(s)),
        CommandLine::Argv(a) => a
            .iter()
            .map(|w| crate::domain::app::submit::quote(w))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

fn env_of(v: &Value) -> Result<Vec<EnvVar>, Invalid> {
    let Some(list) = v.get("environmentSettings").and_then(Value::as_array) else {
        return Ok(vec![]);
    };
    list.iter()
        .map(|e| {
            Ok(EnvVar {
                name: str_of(e, "name")
                    .ok_or_else(|| invalid("environmentSettings", "a setting has no name"))?
                    .to_string(),
                value: str_of(e, "value").unwrap_or_default().to_string(),
            })
        })
        .collect()
}

fn env_json(env: &[EnvVar]) -> Value {
    Value::Array(
        env.iter()
            .map(|e| json!({"name": e.name, "value": e.value}))
            .collect(),
    )
}

/// Resource files: `httpUrl` (fetched), `autoStorageContainerName` (a
/// container of the account's own blob store, every blob, or those under
/// `blobPrefix`). Azure Storage URLs are not lote's store: refused.
fn resources_of(v: &Value) -> Result<Vec<ResourceFile>, Invalid> {
    let Some(list) = v.get("resourceFiles").and_then(Value::as_array) else {
        return Ok(vec![]);
    };
    list.iter()
        .map(|r| {
            let path = str_of(r, "filePath").unwrap_or_default().to_string();
            let mode = str_of(r, "fileMode").and_then(|m| u32::from_str_radix(m, 8).ok());
            let source = if let Some(url) = str_of(r, "httpUrl") {
                ResourceSource::Url { url: url.into() }
            } else if let Some(container) = str_of(r, "autoStorageContainerName") {
                ResourceSource::BlobPrefix {
                    container: container.into(),
                    prefix: str_of(r, "blobPrefix").unwrap_or_default().into(),
                }
            } else {
                return Err(invalid(
                    "resourceFiles",
                    "give httpUrl, or autoStorageContainerName (a container of the account's lote blob store); storageContainerUrl names Azure Storage",
                ));
            };
            let path = if path.is_empty() && matches!(source, ResourceSource::BlobPrefix { .. }) {
                ".".to_string()
            } else {
                path
            };
            Ok(ResourceFile { source, path, mode })
        })
        .collect()
}

fn packages_of(v: &Value) -> Vec<PackageRef> {
    v.get("applicationPackageReferences")
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .filter_map(|p| {
                    Some(PackageRef {
                        id: str_of(p, "applicationId")?.to_string(),
                        version: str_of(p, "version").map(String::from),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Fields lote cannot honour, refused rather than silently dropped.
fn refuse_present(v: &Value, fields: &[(&str, &str)]) -> Result<(), Invalid> {
    for (field, why) in fields {
        match v.get(*field) {
            None | Some(Value::Null) | Some(Value::Bool(false)) => {}
            Some(Value::Number(n)) if n.as_u64() == Some(0) => {}
            Some(Value::Array(a)) if a.is_empty() => {}
            Some(Value::Object(o)) if o.is_empty() => {}
            Some(_) => return Err(invalid(field, *why)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_both_ways() {
        for (text, secs) in [
            ("PT01H00M00S", 3600),
            ("PT05M00S", 300),
            ("P1DT02H00M00S", 93600),
            ("PT01.5S", 2),
            ("P", 0),
            ("PT1H", 3600),
            ("P180D", 180 * 86400),
        ] {
            assert_eq!(parse_duration(text), Some(secs), "{text}");
        }
        assert_eq!(parse_duration("1 hour"), None);
        assert_eq!(parse_duration("PT1X"), None);
        assert_eq!(duration(3723), "PT1H2M3S");
        assert_eq!(duration(0), "PT0S");
        assert_eq!(parse_duration(&duration(93600)), Some(93600));
    }

    #[test]
    fn command_lines_split_like_a_shell_without_one() {
        assert_eq!(
            split_words(r#"/bin/sh -c 'echo "a b" > out.txt' x\ y "q\"z""#).unwrap(),
            ["/bin/sh", "-c", "echo \"a b\" > out.txt", "x y", "q\"z"]
        );
        assert!(split_words("echo 'open").is_err());
        assert!(split_words("   ").is_err());
    }
}
