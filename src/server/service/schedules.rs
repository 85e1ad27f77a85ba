//! Job schedules: create, update, list, show, disable, enable, terminate,
//! delete, and a run now. What falls due is the schedule supervisor's.

use super::{misrouted, AccountCall, Service};
use crate::api::{ApiError, Request, Response};
use crate::domain::pool::Pool;
use crate::domain::schedule::{Schedule, ScheduleCommand, ScheduleSpec};
use crate::server::supervisors::schedules::start_run;

impl Service {
    /// A schedule request of an account.
    pub(super) async fn schedules(
        &self,
        call: &AccountCall<'_>,
        request: &Request,
    ) -> Result<Response, ApiError> {
        let account = call.account;
        let ctx = || call.ctx(self);
        let floor = self.supervisors.schedule_min_interval_secs;
        let stream = |id: &crate::types::JobId| crate::store::StreamId::schedule(account, id);
        match request {
            Request::CreateSchedule { spec, .. } => {
                let spec = self.schedule_spec(call, spec).await?;
                let stream = stream(&spec.id);
                let reply = Response::Created {
                    entity: stream.to_string(),
                };
                let command = ScheduleCommand::Create {
                    spec,
                    interval_floor_secs: floor,
                };
                self.idempotent(account, request, call.body, reply, |extra| async move {
                    self.core
                        .execute_with::<Schedule>(&stream, command, ctx(), extra)
                        .await?;
                    Ok(())
                })
                .await
            }
            Request::UpdateSchedule { spec } => {
                let spec = self.schedule_spec(call, spec).await?;
                let command = ScheduleCommand::Update {
                    interval_floor_secs: floor,
                    spec: spec.clone(),
                };
                self.exec::<Schedule>(stream(&spec.id), command, ctx())
                    .await
            }
            Request::ListSchedules => Ok(Response::Schedules(
                self.list::<Schedule>(&format!("schedule/{account}/"))?,
            )),
            Request::ShowSchedule { schedule } => Ok(Response::Schedule(Box::new(
                self.show::<Schedule>(&stream(schedule), schedule.as_str())
                    .await?,
            ))),
            Request::DisableSchedule { schedule } => {
                self.exec::<Schedule>(stream(schedule), ScheduleCommand::Disable, ctx())
                    .await
            }
            Request::EnableSchedule { schedule } => {
                self.exec::<Schedule>(stream(schedule), ScheduleCommand::Enable, ctx())
                    .await
            }
            Request::TerminateSchedule { schedule } => {
                self.exec::<Schedule>(stream(schedule), ScheduleCommand::Terminate, ctx())
                    .await
            }
            Request::DeleteSchedule { schedule } => {
                self.exec::<Schedule>(stream(schedule), ScheduleCommand::Delete, ctx())
                    .await
            }
            Request::RunScheduleNow { schedule } => {
                let stream = stream(schedule);
                let state = self.show::<Schedule>(&stream, schedule.as_str()).await?;
                let run = state.state.next_run;
                start_run(&self.core, &stream, run, None).await?;
                let job = crate::domain::schedule::job_id(schedule, run);
                Ok(Response::Created {
                    entity: crate::store::StreamId::job(account, &job).to_string(),
                })
            }
            other => Err(misrouted(other)),
        }
    }

    /// The spec with the caller's account in it and in its job template,
    /// its pool checked.
    async fn schedule_spec(
        &self,
        call: &AccountCall<'_>,
        spec: &ScheduleSpec,
    ) -> Result<ScheduleSpec, ApiError> {
        let mut spec = spec.clone();
        spec.account = call.account.clone();
        spec.job.account = call.account.clone();
        if let Some(auto) = spec.job.auto_pool.as_ref() {
            // Each run's job makes its own pool from this template; a
            // secret is sealed to one pool's id, so none can be given here.
            if !auto.pool.secrets.is_empty() {
                return Err(crate::domain::Rejection::invalid(
                    "a schedule's auto pool cannot carry secrets (each run's pool is new); use a pool of its own",
                )
                .into());
            }
            self.blobs
                .check_refs(call.account, &auto.pool.application_packages)
                .await?;
            return Ok(spec);
        }
        self.show::<Pool>(&call.pool_stream(&spec.job.pool), spec.job.pool.as_str())
            .await
            .map_err(|mut e| {
                e.message = format!(
                    "{}: a schedule's jobs run on an existing pool; create it first (lote pool create)",
                    e.message
                );
                e
            })?;
        Ok(spec)
    }
}
