"""Ordinary Azure Batch SDK code (azure-batch 15.1.0), run against lote's
gateway: only the endpoint and the key are lote's. Exits non-zero with a
message on the first thing that is not as Azure would have it."""

import datetime
import sys
import time

from azure.batch import BatchClient, models
from azure.core import MatchConditions
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)

endpoint, account, key = sys.argv[1:4]
client = BatchClient(endpoint, AzureNamedKeyCredential(account, key))


def wait_for(what, check, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise SystemExit(f"timed out waiting for {what}")


# A pool, as one asks Azure for one.
pool = models.BatchPoolCreateOptions(
    id="sdk-pool",
    vm_size="standard_d2s_v3",
    target_dedicated_nodes=2,
    task_slots_per_node=2,
    virtual_machine_configuration=models.VirtualMachineConfiguration(
        image_reference=models.BatchVmImageReference(
            publisher="canonical", offer="0001-com-ubuntu-server-jammy", sku="22_04-lts"
        ),
        node_agent_sku_id="batch.node.ubuntu 22.04",
    ),
)
client.create_pool(pool)
try:
    client.create_pool(pool)
    raise SystemExit("a second pool with the same id was created")
except ResourceExistsError as e:
    assert e.error.code == "PoolExists", e.error.code

got = client.get_pool("sdk-pool")
assert got.state == models.BatchPoolState.ACTIVE, got.state
assert got.vm_size == "standard_d2s_v3", got.vm_size
assert got.task_slots_per_node == 2
assert got.virtual_machine_configuration.image_reference.offer == "0001-com-ubuntu-server-jammy"
assert any(p.id == "sdk-pool" for p in client.list_pools())

nodes = wait_for(
    "two idle nodes",
    lambda: (lambda ns: ns if len(ns) == 2 and all(n.state == "idle" for n in ns) else None)(
        list(client.list_nodes("sdk-pool"))
    ),
)
wait_for("the pool to be steady", lambda: client.get_pool("sdk-pool").current_dedicated_nodes == 2)

# The pool's start task changed, then its properties replaced (the start
# task removed); its nodes counted by state.
client.update_pool(
    "sdk-pool",
    models.BatchPoolUpdateOptions(start_task=models.BatchStartTask(command_line="/bin/sh -c 'echo start'")),
)
assert "echo start" in client.get_pool("sdk-pool").start_task.command_line
client.replace_pool_properties(
    "sdk-pool", models.BatchPoolReplaceOptions(application_package_references=[], metadata=[])
)
assert client.get_pool("sdk-pool").start_task is None
try:
    client.update_pool("sdk-pool", models.BatchPoolUpdateOptions(vm_size="standard_d8s_v3"))
    raise SystemExit("a pool's node size changed")
except HttpResponseError as e:
    assert e.status_code == 400 and e.error.code == "InvalidPropertyValue", e.error.code
counts = [c for c in client.list_pool_node_counts() if c.pool_id == "sdk-pool"]
assert counts and counts[0].dedicated.total == 2 and counts[0].dedicated.idle == 2, counts

# Conditional requests on the pool's ETag.
etag = client.get_pool("sdk-pool").etag
try:
    client.get_pool("sdk-pool", etag=etag, match_condition=MatchConditions.IfModified)
    raise SystemExit("a conditional get of an unchanged pool returned it")
except HttpResponseError as e:
    assert e.status_code == 304, e.status_code
try:
    client.begin_delete_pool("sdk-pool", etag="0xBAD", match_condition=MatchConditions.IfNotModified).result()
    raise SystemExit("a delete with a stale ETag went through")
except HttpResponseError as e:
    assert e.status_code == 412, e.status_code

try:
    client.get_pool("no-such-pool")
    raise SystemExit("a pool that does not exist was found")
except ResourceNotFoundError as e:
    assert e.error.code == "PoolNotFound", e.error.code

run = client.evaluate_pool_auto_scale(
    "sdk-pool",
    models.BatchPoolEvaluateAutoScaleOptions(auto_scale_formula="$TargetDedicatedNodes = 2;"),
)
assert "$TargetDedicatedNodes=2" in run.results, run.results
try:
    client.evaluate_pool_auto_scale(
        "sdk-pool", models.BatchPoolEvaluateAutoScaleOptions(auto_scale_formula="$TargetDedicatedNodes = ;")
    )
    bad = None
except HttpResponseError as e:
    bad = e
if bad is None and run.error is None:
    pass  # an evaluation error may come back as the run's error instead

# A job and twenty tasks, added in one collection.
client.create_job(
    models.BatchJobCreateOptions(id="sdk-job", pool_info=models.BatchPoolInfo(pool_id="sdk-pool"))
)
tasks = [
    models.BatchTaskCreateOptions(id=f"t{i}", command_line=f"/bin/sh -c 'echo hello {i}'")
    for i in range(20)
]
added = client.create_tasks("sdk-job", tasks)
assert len(added.result_values) == 20 and all(r.status == "success" for r in added.result_values)
try:
    client.create_task("sdk-job", models.BatchTaskCreateOptions(id="t1", command_line="true"))
    raise SystemExit("a task id was added twice")
except ResourceExistsError as e:
    assert e.error.code == "TaskExists", e.error.code

wait_for(
    "every task to complete",
    lambda: all(t.state == models.BatchTaskState.COMPLETED for t in client.list_tasks("sdk-job")),
)
# Pages of five, followed by the SDK through odata.nextLink.
paged = list(client.list_tasks("sdk-job", max_results=5))
assert len(paged) == 20, len(paged)
assert len({t.id for t in paged}) == 20
done = list(client.list_tasks("sdk-job", filter="state eq 'completed'", select=["id", "state"]))
assert len(done) == 20 and done[0].command_line is None, done[0]
one = client.get_task("sdk-job", "t3")
assert one.execution_info.exit_code == 0 and one.execution_info.result == "success", one.execution_info
assert one.node_info.pool_id == "sdk-pool"

counts = client.get_job_task_counts("sdk-job")
assert counts.task_counts.succeeded == 20 and counts.task_counts.failed == 0, counts

out = b"".join(client.download_task_file("sdk-job", "t3", "stdout.txt"))
assert out == b"hello 3\n", out
names = [f.name for f in client.list_task_files("sdk-job", "t3")]
assert "stdout.txt" in names, names
props = client.get_task_file_properties("sdk-job", "t3", "stdout.txt")
assert props.content_length == 8, props.content_length
assert b"".join(client.download_task_file("sdk-job", "t3", "stdout.txt", ocp_range="bytes=0-4")) == b"hello"
node_files = list(client.list_node_files("sdk-pool", one.node_info.node_id, recursive=True))
assert node_files, "a node lists no files"

# A failing task: its exit code and Azure's failure category.
client.create_task("sdk-job", models.BatchTaskCreateOptions(id="fails", command_line="/bin/sh -c 'exit 3'"))
failed = wait_for(
    "the failing task",
    lambda: (lambda t: t if t.state == "completed" else None)(client.get_task("sdk-job", "fails")),
)
assert failed.execution_info.exit_code == 3 and failed.execution_info.result == "failure"
assert failed.execution_info.failure_info.category == "usererror"

# Azure's own advice: make a job that waits, add its tasks, then tell it
# to end when they have.
client.create_job(
    models.BatchJobCreateOptions(id="sdk-update", pool_info=models.BatchPoolInfo(pool_id="sdk-pool"), priority=10)
)
client.create_task("sdk-update", models.BatchTaskCreateOptions(id="u1", command_line="true"))
wait_for("u1", lambda: client.get_task("sdk-update", "u1").state == "completed")
assert client.get_job("sdk-update").state == "active"
client.update_job("sdk-update", models.BatchJobUpdateOptions(priority=100, all_tasks_complete_mode="terminatejob"))
wait_for("the updated job to complete", lambda: client.get_job("sdk-update").state == "completed")
updated = client.get_job("sdk-update")
assert updated.priority == 100, updated.priority
assert updated.execution_info.termination_reason == "AllTasksComplete", updated.execution_info
try:
    client.update_job("sdk-update", models.BatchJobUpdateOptions(priority=1))
    raise SystemExit("a completed job took new settings")
except ResourceExistsError as e:
    assert e.error.code == "JobCompleted", e.error.code

# A job with a preparation and a release task, their status per node.
client.create_job(
    models.BatchJobCreateOptions(
        id="sdk-prep",
        pool_info=models.BatchPoolInfo(pool_id="sdk-pool"),
        job_preparation_task=models.BatchJobPreparationTask(command_line="/bin/sh -c 'echo ready'"),
        job_release_task=models.BatchJobReleaseTask(command_line="/bin/sh -c 'echo bye'"),
        all_tasks_complete_mode="terminatejob",
    )
)
client.create_task("sdk-prep", models.BatchTaskCreateOptions(id="p1", command_line="true"))
wait_for("the prepared job to complete", lambda: client.get_job("sdk-prep").state == "completed")
prep = list(client.list_job_preparation_and_release_task_status("sdk-prep"))
assert len(prep) >= 1 and prep[0].job_preparation_task_execution_info.result == "success", prep
assert prep[0].job_release_task_execution_info.exit_code == 0, prep

# Nodes: scheduling off and on, a reboot.
node_ids = sorted(n.id for n in client.list_nodes("sdk-pool"))
client.disable_node_scheduling(
    "sdk-pool",
    node_ids[0],
    models.BatchNodeDisableSchedulingOptions(node_disable_scheduling_option="taskcompletion"),
)
try:
    client.disable_node_scheduling(
        "sdk-pool", node_ids[1], models.BatchNodeDisableSchedulingOptions(node_disable_scheduling_option="terminate")
    )
    raise SystemExit("an option lote does not honour was taken")
except HttpResponseError as e:
    assert e.status_code == 400 and e.error.code == "InvalidPropertyValue", e.error.code
assert client.get_node("sdk-pool", node_ids[0]).scheduling_state == "disabled"
client.enable_node_scheduling("sdk-pool", node_ids[0])
wait_for("scheduling back on", lambda: client.get_node("sdk-pool", node_ids[0]).scheduling_state == "enabled")
client.begin_reboot_node(
    "sdk-pool", node_ids[1], {"nodeRebootKind": "requeue"}, polling_interval=1
).result()
wait_for("the rebooted node to be idle", lambda: client.get_node("sdk-pool", node_ids[1]).state == "idle")

# No application packages yet; a missing one is Azure's error.
assert list(client.list_applications()) == []
try:
    client.get_application("blender")
    raise SystemExit("an application that does not exist was found")
except ResourceNotFoundError as e:
    assert e.error.code == "ApplicationNotFound", e.error.code

# A job schedule: a job every hour, the first now.
client.create_job_schedule(
    models.BatchJobScheduleCreateOptions(
        id="sdk-hourly",
        schedule=models.BatchJobScheduleConfiguration(recurrence_interval=datetime.timedelta(hours=1)),
        job_specification=models.BatchJobSpecification(
            pool_info=models.BatchPoolInfo(pool_id="sdk-pool"),
            job_manager_task=models.BatchJobManagerTask(id="jm", command_line="/bin/sh -c 'echo run'"),
        ),
    )
)
assert client.job_schedule_exists("sdk-hourly")
sched = client.get_job_schedule("sdk-hourly")
assert sched.state == "active" and sched.schedule.recurrence_interval == datetime.timedelta(hours=1), sched
runs = wait_for("the schedule's first job", lambda: list(client.list_jobs_from_schedule("sdk-hourly")))
assert runs[0].id == "sdk-hourly-job-1", runs[0].id
client.disable_job_schedule("sdk-hourly")
assert client.get_job_schedule("sdk-hourly").state == "disabled"
client.enable_job_schedule("sdk-hourly")
assert client.get_job_schedule("sdk-hourly").state == "active"
client.begin_terminate_job_schedule("sdk-hourly", polling_interval=1).result()
assert client.get_job_schedule("sdk-hourly").state in ("completed", "terminating")
client.begin_delete_job_schedule("sdk-hourly", polling_interval=1).result()
try:
    client.get_job_schedule("sdk-hourly")
    raise SystemExit("the schedule is still there")
except ResourceNotFoundError as e:
    assert e.error.code == "JobScheduleNotFound", e.error.code

# Long-running operations, polled as the SDK polls them.
client.begin_terminate_job("sdk-job", {"terminateReason": "done"}, polling_interval=1).result()
assert client.get_job("sdk-job").state == models.BatchJobState.COMPLETED
client.begin_delete_job("sdk-job", polling_interval=1).result()
client.begin_resize_pool(
    "sdk-pool", models.BatchPoolResizeOptions(target_dedicated_nodes=1), polling_interval=1
).result()
wait_for("one node", lambda: client.get_pool("sdk-pool").current_dedicated_nodes == 1)
client.begin_delete_pool("sdk-pool", polling_interval=1).result()
try:
    client.get_pool("sdk-pool")
    raise SystemExit("the pool is still there")
except ResourceNotFoundError:
    pass
print("ok")
