"""Ordinary Azure Batch SDK code (azure-batch 15.1.0), run against lote's
gateway: only the endpoint and the key are lote's. Exits non-zero with a
message on the first thing that is not as Azure would have it."""

import sys
import time

from azure.batch import BatchClient, models
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
assert any(p.id == "sdk-pool" for p in client.list_pools())

nodes = wait_for(
    "two idle nodes",
    lambda: (lambda ns: ns if len(ns) == 2 and all(n.state == "idle" for n in ns) else None)(
        list(client.list_nodes("sdk-pool"))
    ),
)
wait_for("the pool to be steady", lambda: client.get_pool("sdk-pool").current_dedicated_nodes == 2)

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

# A failing task: its exit code and Azure's failure category.
client.create_task("sdk-job", models.BatchTaskCreateOptions(id="fails", command_line="/bin/sh -c 'exit 3'"))
failed = wait_for(
    "the failing task",
    lambda: (lambda t: t if t.state == "completed" else None)(client.get_task("sdk-job", "fails")),
)
assert failed.execution_info.exit_code == 3 and failed.execution_info.result == "failure"
assert failed.execution_info.failure_info.category == "usererror"

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
