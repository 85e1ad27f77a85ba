//! Job schedules over Azure's REST API: `/jobschedules`, as lote's job
//! schedules (a recurrence interval, a start window, not-before and
//! not-after, one active job at a time as Azure's rule), and the jobs they
//! made.

use serde_json::{json, Value};

use super::common::{call, caller_account, empty, entity, id, page, unexpected};
use super::model::{self, duration, etag, invalid, Invalid};
use super::{AzError, Call};
use crate::api::{Request, Response};
use crate::domain::schedule::{Overlap, Recurrence, Schedule, ScheduleSpec, ScheduleStatus};
use crate::domain::Versioned;
use crate::server::Service;
use crate::types::{AccountName, JobId, Timestamp};

fn time_of(v: &Value, key: &str) -> Result<Option<Timestamp>, Invalid> {
    match v.get(key).and_then(Value::as_str) {
        None => Ok(None),
        Some(t) => Timestamp::parse(t)
            .map(Some)
            .map_err(|_| invalid(key, format!("{t:?} is not an RFC 3339 time"))),
    }
}

/// `BatchJobScheduleCreateOptions` (or a replace / patch body over the
/// current spec) as lote's schedule spec.
fn schedule_spec(
    v: &Value,
    id: &JobId,
    account: &AccountName,
    current: Option<&ScheduleSpec>,
    sizes: &[model::VmSize],
) -> Result<ScheduleSpec, Invalid> {
    let mut spec = match current {
        Some(c) => c.clone(),
        None => ScheduleSpec {
            id: id.clone(),
            account: account.clone(),
            display_name: String::new(),
            recurrence: Recurrence::Once,
            not_before: None,
            not_after: None,
            start_window_secs: None,
            // Azure's rule: a run waits while the previous job is active.
            overlap: Overlap::Wait,
            job: crate::domain::job::JobSpec::on_pool(
                id.clone(),
                account.clone(),
                crate::types::PoolId::new("unset").expect("a valid id"),
            ),
            tasks: vec![],
        },
    };
    if let Some(name) = v.get("displayName").and_then(Value::as_str) {
        spec.display_name = name.into();
    }
    if let Some(s) = v.get("schedule") {
        spec.not_before = time_of(s, "doNotRunUntil")?;
        spec.not_after = time_of(s, "doNotRunAfter")?;
        spec.start_window_secs = s
            .get("startWindow")
            .and_then(Value::as_str)
            .map(|t| {
                model::parse_duration(t)
                    .ok_or_else(|| invalid("startWindow", "is not an ISO 8601 duration"))
            })
            .transpose()?;
        spec.recurrence = match s.get("recurrenceInterval").and_then(Value::as_str) {
            Some(t) => Recurrence::Every {
                secs: model::parse_duration(t)
                    .ok_or_else(|| invalid("recurrenceInterval", "is not an ISO 8601 duration"))?,
            },
            None => Recurrence::Once,
        };
    }
    if let Some(j) = v.get("jobSpecification") {
        spec.job = model::job_spec(j, id.clone(), account, sizes)?;
    }
    Ok(spec)
}

fn state(s: ScheduleStatus) -> &'static str {
    match s {
        ScheduleStatus::Absent | ScheduleStatus::Active => "active",
        ScheduleStatus::Disabled => "disabled",
        ScheduleStatus::Terminating => "terminating",
        ScheduleStatus::Completed => "completed",
        ScheduleStatus::Deleting | ScheduleStatus::Deleted => "deleting",
    }
}

fn schedule_json(base: &str, s: &Versioned<Schedule>) -> Value {
    let st = &s.state;
    let Some(spec) = &st.spec else {
        return Value::Null;
    };
    let mut schedule = json!({
        "doNotRunUntil": spec.not_before.map(|t| t.to_string()),
        "doNotRunAfter": spec.not_after.map(|t| t.to_string()),
        "startWindow": spec.start_window_secs.map(duration),
    });
    if let Recurrence::Every { secs } = spec.recurrence {
        schedule["recurrenceInterval"] = json!(duration(secs));
    }
    let job = model::job_json(
        base,
        &Versioned {
            version: s.version,
            state: crate::domain::job::Job {
                spec: Some(spec.job.clone()),
                ..Default::default()
            },
        },
    );
    let recent = st
        .recent
        .last()
        .map(|r| json!({"id": r.job, "url": format!("{base}/jobs/{}", r.job)}));
    json!({
        "id": spec.id,
        "displayName": spec.display_name,
        "url": format!("{base}/jobschedules/{}", spec.id),
        "eTag": etag(s.version),
        "lastModified": st.created_at.map(|t| t.to_string()),
        "creationTime": st.created_at.map(|t| t.to_string()),
        "state": state(st.status),
        "stateTransitionTime": st.created_at.map(|t| t.to_string()),
        "schedule": schedule,
        "jobSpecification": {
            "poolInfo": job["poolInfo"],
            "priority": job["priority"],
            "constraints": job["constraints"],
            "onAllTasksComplete": job["onAllTasksComplete"],
            "onTaskFailure": job["onTaskFailure"],
            "usesTaskDependencies": job["usesTaskDependencies"],
            "commonEnvironmentSettings": job["commonEnvironmentSettings"],
            "metadata": job["metadata"],
        },
        "executionInfo": {
            "nextRunTime": st.next_due.map(|t| t.to_string()),
            "recentJob": recent,
        },
    })
}

async fn show(s: &Service, c: &Call, sid: &str) -> Result<Versioned<Schedule>, AzError> {
    let schedule = id(sid, "job schedule", JobId::new)?;
    let Response::Schedule(v) = call(s, c, Request::ShowSchedule { schedule }).await? else {
        return Err(unexpected("ShowSchedule"));
    };
    Ok(*v)
}

/// Routes `/jobschedules...`.
pub async fn route(s: &Service, c: &Call, seg: &[&str]) -> Result<super::Reply, AzError> {
    use hyper::Method;
    match (&c.method, seg) {
        (&Method::POST, ["jobschedules"]) => {
            let body = c.json()?;
            let sid = id(
                body.get("id").and_then(Value::as_str).unwrap_or_default(),
                "id",
                JobId::new,
            )?;
            let spec = schedule_spec(&body, &sid, &caller_account(c)?, None, &c.sizes)?;
            let url = format!("{}/jobschedules/{sid}", c.base);
            call(
                s,
                c,
                Request::CreateSchedule {
                    spec,
                    request_id: c.request_id(),
                },
            )
            .await?;
            Ok(empty(s, 201, Some(&url), Some(etag(1))))
        }
        (&Method::GET, ["jobschedules"]) => {
            let Response::Schedules(list) = call(s, c, Request::ListSchedules).await? else {
                return Err(unexpected("ListSchedules"));
            };
            let items = list.iter().map(|x| schedule_json(&c.base, x)).collect();
            page(c, "/jobschedules", items)
        }
        (&Method::GET, ["jobschedules", sid]) => {
            entity(c, schedule_json(&c.base, &show(s, c, sid).await?))
        }
        // `job_schedule_exists`: 200 or 404, no body.
        (&Method::HEAD, ["jobschedules", sid]) => {
            show(s, c, sid).await?;
            Ok(empty(s, 200, None, None))
        }
        (&Method::PATCH | &Method::PUT, ["jobschedules", sid]) => {
            let current = show(s, c, sid).await?;
            super::common::check_if_match(c, &etag(current.version))?;
            let body = c.json()?;
            let base = if c.method == Method::PUT {
                None
            } else {
                current.state.spec.as_ref()
            };
            let sid = id(sid, "job schedule", JobId::new)?;
            let mut spec = schedule_spec(&body, &sid, &caller_account(c)?, base, &c.sizes)?;
            if let (None, Some(old)) = (base, current.state.spec.as_ref()) {
                if body.get("jobSpecification").is_none() {
                    spec.job = old.job.clone();
                }
            }
            call(s, c, Request::UpdateSchedule { spec }).await?;
            Ok(empty(
                s,
                200,
                Some(&format!("{}/jobschedules/{sid}", c.base)),
                None,
            ))
        }
        (&Method::DELETE, ["jobschedules", sid]) => {
            let schedule = id(sid, "job schedule", JobId::new)?;
            call(s, c, Request::DeleteSchedule { schedule }).await?;
            Ok(empty(s, 202, None, None))
        }
        (&Method::POST, ["jobschedules", sid, action]) => {
            let schedule = id(sid, "job schedule", JobId::new)?;
            let (request, status) = match *action {
                "disable" => (Request::DisableSchedule { schedule }, 204),
                "enable" => (Request::EnableSchedule { schedule }, 204),
                "terminate" => (Request::TerminateSchedule { schedule }, 202),
                other => {
                    return Err(AzError::new(
                        404,
                        "ResourceNotFound",
                        format!("no job schedule action {other}"),
                    ))
                }
            };
            call(s, c, request).await?;
            Ok(empty(s, status, None, None))
        }
        (&Method::GET, ["jobschedules", sid, "jobs"]) => {
            show(s, c, sid).await?;
            let Response::Jobs(jobs) = call(s, c, Request::ListJobs).await? else {
                return Err(unexpected("ListJobs"));
            };
            let prefix = format!("{sid}-job-");
            let items = jobs
                .iter()
                .filter(|j| {
                    j.state
                        .spec
                        .as_ref()
                        .is_some_and(|x| x.id.as_str().starts_with(&prefix))
                })
                .map(|j| model::job_json(&c.base, j))
                .collect();
            page(c, &format!("/jobschedules/{sid}/jobs"), items)
        }
        _ => Err(super::common::no_route(c)),
    }
}
