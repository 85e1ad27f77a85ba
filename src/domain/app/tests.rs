use super::definition::{parse, placeholder_names, OutputKind, ParamKind, Split};
use super::submit::{check_run, expand, quote, AppInput, RunTarget};
use super::*;
use crate::types::{JobId, PoolId};

const ZOOM: &str = r#"
name = "zoom"
version = "1.0"
description = "frames of a zoom"

[parameters.first]
type = "integer"
default = 1
min = 1

[parameters.last]
type = "integer"
required = true
max = 100000

[parameters.palette]
type = "choice"
choices = ["fire", "ice"]
default = "fire"

[parameters.title]
type = "string"
default = "my zoom"

[split]
range = { from = "first", to = "last", chunk = 10 }

[[stages]]
name = "render"
command = "{app}/zoom render {range.from} {range.to} --palette {palette} --title {title} ${HOME}"
outputs = [
  { pattern = "frame-*.ppm", kind = "output" },
  { pattern = "thumb.ppm", kind = "preview" },
]

[outcomes]
retry_exit_codes = [75]
max_retries = 3

[merge]
command = "{app}/zoom merge --out zoom.png"
output = "zoom.png"
preview = "preview.png"
"#;

fn input(name: &str) -> AppInput {
    AppInput {
        name: name.into(),
        sha256: "ab".repeat(32),
    }
}

fn given(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn a_definition_parses_in_the_order_it_is_written() {
    let d = parse(ZOOM).unwrap();
    let names: Vec<&str> = d.parameters.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["first", "last", "palette", "title"]);
    assert_eq!(
        d.parameters[0].kind,
        ParamKind::Integer {
            min: Some(1),
            max: None
        }
    );
    assert_eq!(d.parameters[0].default.as_deref(), Some("1"));
    assert!(matches!(d.split, Split::Range { chunk: 10, .. }));
    assert_eq!(d.stages[0].outputs[1].kind, OutputKind::Preview);
    assert_eq!(d.outcomes.retry_exit_codes, [75]);
    assert_eq!(d.merge.unwrap().preview.as_deref(), Some("preview.png"));
}

#[test]
fn every_problem_of_a_definition_is_reported_with_its_line() {
    let bad = r#"name = "zoom"
version = "1.0"

[parameters.n]
type = "integer"
default = "many"

[parameters.mode]
type = "colour"

[split]
lines = "n"

[[stages]]
command = "run {nope} {index}"
outputs = [{ pattern = "x", kind = "result" }]
"#;
    let problems = parse(bad).unwrap_err();
    let text = super::definition::problems_text(&problems);
    assert!(
        text.contains("line 4: parameter n: default \"many\" is not an integer"),
        "{text}"
    );
    assert!(
        text.contains("line 8: parameter mode: type \"colour\""),
        "{text}"
    );
    assert!(
        text.contains("line 11: split lines: \"n\" is not a file parameter"),
        "{text}"
    );
    assert!(
        text.contains("line 15: unknown placeholder {nope}"),
        "{text}"
    );
    assert!(text.contains("line 16: output kind \"result\""), "{text}");
    assert_eq!(problems.len(), 5, "{text}");
}

#[test]
fn a_syntax_error_names_its_line_and_unknown_keys_are_refused() {
    let p = parse("name = \"a\"\nversion = \"1\"\n[[stages]]\ncommand = \"x\"\nretries = 3\n")
        .unwrap_err();
    assert_eq!(p[0].line, 5, "{p:?}");
    assert!(p[0].message.contains("retries"), "{p:?}");
    let p = parse("name = \"a\"\nversion = \"1\"\n[split\n").unwrap_err();
    assert_eq!(p[0].line, 3, "{p:?}");
}

#[test]
fn placeholders_leave_the_shells_own_braces_alone() {
    assert_eq!(
        placeholder_names("a {x} ${HOME} {{literal}} {range.from}"),
        ["x", "range.from"]
    );
    assert_eq!(quote("fire"), "fire");
    assert_eq!(quote("my zoom"), "'my zoom'");
    assert_eq!(quote("it's; rm -rf /"), "'it'\\''s; rm -rf /'");
}

#[test]
fn a_run_is_checked_whole_before_anything_runs() {
    let d = parse(ZOOM).unwrap();
    let problems = check_run(
        &d,
        &given(&[
            ("first", "0"),
            ("palette", "red"),
            ("speed", "3"),
            ("title", "ok"),
        ]),
        &[],
    )
    .unwrap_err();
    let text = problems.join("\n");
    assert!(
        text.contains("first=\"0\" is below the minimum 1"),
        "{text}"
    );
    assert!(
        text.contains("palette=\"red\" is not one of fire, ice"),
        "{text}"
    );
    assert!(
        text.contains("speed: zoom 1.0 has no such parameter"),
        "{text}"
    );
    assert!(text.contains("last: required"), "{text}");
    assert_eq!(problems.len(), 4, "{text}");

    let problems = check_run(&d, &given(&[("first", "50"), ("last", "10")]), &[]).unwrap_err();
    assert!(problems[0].contains("the range is empty"), "{problems:?}");
    let problems = check_run(&d, &given(&[("last", "100000")]), &[]).unwrap_err();
    assert!(problems[0].contains("10001 tasks"), "{problems:?}");
}

#[test]
fn a_range_run_becomes_chunks_a_merge_and_outcomes() {
    let d = parse(ZOOM).unwrap();
    let values = check_run(&d, &given(&[("last", "25")]), &[input("scene.txt")]).unwrap();
    let (job, pool, account) = (
        JobId::new("z1").unwrap(),
        PoolId::new("p").unwrap(),
        crate::types::AccountName::new("acme").unwrap(),
    );
    let inputs = [input("scene.txt")];
    let run = expand(
        &d,
        &values,
        RunTarget {
            account: &account,
            job: &job,
            pool: &pool,
            inputs: &inputs,
            lines: None,
        },
    )
    .unwrap();
    assert_eq!(run.tasks.len(), 4);
    let cmd = |i: usize| match &run.tasks[i].command_line {
        crate::domain::spec::CommandLine::Shell(s) => s.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        cmd(0),
        "\"$LOTE_APP_ZOOM_1_0\"/zoom render 1 10 --palette fire --title 'my zoom' ${HOME}"
    );
    assert!(cmd(2).contains("render 21 25"), "{}", cmd(2));
    let merge = &run.tasks[3];
    assert_eq!(merge.id.as_str(), "4");
    assert_eq!(merge.depends_on.ranges[0].start, 1);
    assert_eq!(merge.depends_on.ranges[0].end, 3);
    assert!(run.tasks[0].depends_on.is_empty());
    let c = run.tasks[0].exit_conditions.as_deref().unwrap();
    assert_eq!(c.exit_codes[0].0, 75);
    assert_eq!(c.exit_codes[0].1.retry, Some(true));
    assert_eq!(c.default.unwrap().retry, Some(false));
    assert_eq!(run.job.common_resource_files.len(), 1);
    assert_eq!(run.job.max_task_retries, 3);
    assert!(run
        .job
        .metadata
        .iter()
        .any(|m| m.name == "lote.app.param.last" && m.value == "25"));
    run.job.validate().unwrap();
    for t in &run.tasks {
        t.validate().unwrap();
    }
}

#[test]
fn files_and_lines_splits_and_stages() {
    let text = r#"
name = "thumbs"
version = "2"
[parameters.list]
type = "file"
required = true
[split]
files = "*.jpg"
[[stages]]
command = "convert {file} small-{index}.jpg"
outputs = [{ pattern = "small-*.jpg", kind = "intermediate" }]
[[stages]]
name = "check"
command = "ls intermediate"
single = true
"#;
    let d = parse(text).unwrap();
    let inputs = [input("a.jpg"), input("b.jpg"), input("list.txt")];
    let values = check_run(&d, &given(&[("list", "list.txt")]), &inputs).unwrap();
    let (job, pool, account) = (
        JobId::new("t").unwrap(),
        PoolId::new("p").unwrap(),
        crate::types::AccountName::new("acme").unwrap(),
    );
    let run = expand(
        &d,
        &values,
        RunTarget {
            account: &account,
            job: &job,
            pool: &pool,
            inputs: &inputs,
            lines: None,
        },
    )
    .unwrap();
    assert_eq!(run.tasks.len(), 3);
    // Each file's task fetches its own file; the rest is shared.
    assert_eq!(run.tasks[0].resource_files[0].path, "a.jpg");
    assert_eq!(run.job.common_resource_files.len(), 1);
    assert_eq!(run.job.common_resource_files[0].path, "list.txt");
    // The second stage waits for all of the first.
    assert_eq!(run.tasks[2].depends_on.ranges[0].end, 2);
    assert!(
        check_run(&d, &given(&[("list", "nope.txt")]), &inputs).unwrap_err()[0]
            .contains("names no input file")
    );
    let none = check_run(&d, &given(&[("list", "list.txt")]), &[input("list.txt")]).unwrap_err();
    assert!(none[0].contains("no input file matches"), "{none:?}");
}

#[test]
fn versions_and_defaults() {
    let d = parse(ZOOM).unwrap();
    let mut d2 = d.clone();
    d2.version = "2.0".into();
    let ctx = Ctx {
        now: crate::types::Timestamp::from_micros(1),
        principal: crate::types::Principal::Admin,
        request_id: crate::types::RequestId(uuid::Uuid::nil()),
        fresh: [uuid::Uuid::nil(); 4],
    };
    let account = crate::types::AccountName::new("acme").unwrap();
    let mut app = App::default();
    let publish = |app: &App, def: &AppDefinition, make_default| {
        app.decide(
            &AppCommand::Publish {
                account: account.clone(),
                definition: Box::new(def.clone()),
                make_default,
            },
            &ctx,
        )
    };
    for e in publish(&app, &d, false).unwrap() {
        app.apply(&e);
    }
    assert_eq!(
        app.default_version.as_deref(),
        Some("1.0"),
        "the first is the default"
    );
    for e in publish(&app, &d2, false).unwrap() {
        app.apply(&e);
    }
    assert_eq!(app.resolve(None).unwrap().version, "1.0");
    assert_eq!(app.resolve(Some("2.0")).unwrap().version, "2.0");
    let again = publish(&app, &d2, true).unwrap_err();
    assert_eq!(again.code, RejectionCode::AppVersionExists);
    let missing = app.resolve(Some("3")).unwrap_err();
    assert!(missing.detail.contains("published: 1.0, 2.0"), "{missing}");
    for e in app
        .decide(
            &AppCommand::SetDefault {
                version: "2.0".into(),
            },
            &ctx,
        )
        .unwrap()
    {
        app.apply(&e);
    }
    assert_eq!(app.resolve(None).unwrap().version, "2.0");
    app.sanity_check().unwrap();
}
