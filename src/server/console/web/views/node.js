// One node: its state, what it runs, its start task's output and files.
import { h, call, get, link, unwrap, badge, fmtTime, num, act, throttled } from "../app.js";

export async function render({ root, params }) {
  const { pool, node } = params;
  const info = h("div");
  const running = h("div");
  const files = h("div");
  const output = h("div");
  root.append(h("h1", {}, "Node ", node, h("span", { class: "muted" }, ` in pool ${pool}`)), info,
    h("div", { class: "row" },
      h("button", { onclick: () => act("Reboot", () => call({ RebootNode: { pool, node } }).then(update)) }, "Reboot"),
      h("button", { onclick: () => act("Disable scheduling", () => call({ DisableNode: { pool, node } }).then(update)) }, "Disable scheduling"),
      h("button", { onclick: () => act("Enable scheduling", () => call({ EnableNode: { pool, node } }).then(update)) }, "Enable scheduling"),
      h("button", { class: "danger", onclick: () => act("Remove", () => call({ RemoveNode: { pool, node, deallocation: "requeue" } }).then(update)) }, "Remove")),
    h("h2", {}, "Running tasks"), running,
    h("h2", {}, "Start task output"), output, h("h2", {}, "Files"), files);

  async function update() {
    const n = unwrap(await call({ ShowNode: { pool, node } }), "Node").state;
    info.replaceChildren(h("dl", { class: "kv", "data-testid": "node-info" },
      h("dt", {}, "State"), h("dd", {}, badge(n.state), " since ", fmtTime(n.state_since)),
      h("dt", {}, "Running tasks"), h("dd", {}, num(n.running_tasks), n.agent ? ` of ${n.agent.task_slots} slots` : ""),
      h("dt", {}, "Agent"), h("dd", {}, n.agent ? `${n.agent.hostname} (${n.agent.address}), ${n.agent.cores} cores, ${num(n.agent.memory_mib)} MiB, lote ${n.agent.agent_version}` : "not registered"),
      h("dt", {}, "Start task failures"), h("dd", {}, num(n.start_task_failures), n.last_start_task_message ? `: ${n.last_start_task_message}` : ""),
      n.unusable_reason ? [h("dt", {}, "Unusable"), h("dd", {}, n.unusable_reason)] : null));
    const held = await get("/api/node-tasks", { pool, node });
    running.replaceChildren(held.tasks.length === 0 ? h("p", { class: "muted" }, "nothing running") :
      h("table", { "data-testid": "node-tasks" }, h("tr", {}, h("th", {}, "Job"), h("th", {}, "Task"), h("th", { class: "num" }, "Attempt")),
        held.tasks.map((t) => h("tr", {}, h("td", {}, link(`/ui/jobs/${encodeURIComponent(t.job)}`, t.job)),
          h("td", {}, link(`/ui/jobs/${encodeURIComponent(t.job)}/tasks/${encodeURIComponent(t.task)}`, t.task)),
          h("td", { class: "num" }, t.attempt)))));
  }

  async function readFile(path) {
    const r = unwrap(await call({ ReadNodeFile: { pool, node, path, offset: 0, max_bytes: 65536 } }), "Files");
    const data = r.answer.Chunk ? r.answer.Chunk.data : [];
    return new TextDecoder().decode(new Uint8Array(data));
  }

  async function browse() {
    try {
      const r = unwrap(await call({ ListNodeFiles: { pool, node, path: "", recursive: false } }), "Files");
      const entries = r.answer.Listing || [];
      const start = await call({ ListNodeFiles: { pool, node, path: "starttask", recursive: false } })
        .then((x) => unwrap(x, "Files").answer.Listing || []).catch(() => []);
      files.replaceChildren(h("table", { "data-testid": "node-files" },
        h("tr", {}, h("th", {}, "Path"), h("th", { class: "num" }, "Size"), h("th", {}, "Modified")),
        // Listings name paths from the node's directory (`starttask/stderr.txt`).
        [...entries, ...start].map((e) => h("tr", {},
          h("td", {}, e.kind === "file"
            ? h("a", { href: `/api/download?kind=node&pool=${encodeURIComponent(pool)}&node=${encodeURIComponent(node)}&path=${encodeURIComponent(e.path)}` }, e.path)
            : `${e.path}/`),
          h("td", { class: "num" }, num(e.size)), h("td", {}, fmtTime(e.modified))))));
      const outs = [];
      for (const name of ["stdout.txt", "stderr.txt"]) {
        if (start.some((e) => e.path === `starttask/${name}`)) outs.push(h("div", { class: "muted" }, name), h("pre", { "data-testid": `starttask-${name}` }, await readFile(`starttask/${name}`)));
      }
      output.replaceChildren(...(outs.length ? outs : [h("p", { class: "muted" }, "no start task output on this node")]));
    } catch (e) {
      files.replaceChildren(h("p", { class: "muted" }, `files unavailable: ${e.message}`));
    }
  }

  await update();
  await browse();
  // What a node runs changes with its tasks' events, not its own.
  return { refresh: throttled(1000, update) };
}
