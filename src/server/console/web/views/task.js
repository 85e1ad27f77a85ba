// One task: what it runs, its state and attempts (with their nodes, exit
// codes and failure categories), why it waits, its stdout / stderr tailing
// while it runs, its files and output manifest, and its audit trail with a
// time slider that shows its state at any past instant.
import { h, call, get, unwrap, link, num, badge, taskBadge, fmtTime, throttled, touches } from "../app.js";

const TAIL_MAX = 512 * 1024;

export async function render({ root, params, session }) {
  const { job, task } = params;
  const entity = `task/${session.account}/${job}/${task}`;
  const info = h("div");
  const why = h("div", { "data-testid": "explanation" });
  const attempts = h("div");
  const out = h("pre", { "data-testid": "output" });
  const files = h("div");
  const manifest = h("div");
  const trail = h("div");
  const slider = h("input", { type: "range", class: "slider", min: 0, max: 1000, value: 1000, "data-testid": "audit-slider" });
  const at = h("div", { class: "muted", "data-testid": "audit-at" });
  const then = h("div", { "data-testid": "audit-state" });
  let stream = "stdout";
  let offset = 0;
  let running = true;
  let history = [];

  const tabs = h("div", { class: "row tabs" }, ["stdout", "stderr"].map((s) => h("button", {
    class: s === stream ? "here" : "", "data-testid": `tab-${s}`,
    onclick: (e) => {
      stream = s; offset = 0; out.textContent = "";
      for (const b of tabs.children) b.classList.toggle("here", b === e.target);
      tail();
    },
  }, s)));

  root.append(h("h1", {}, "Task ", task, h("span", { class: "muted" }, " in job "), link(`/ui/jobs/${encodeURIComponent(job)}`, job)),
    info, why, h("h2", {}, "Attempts"), attempts, h("h2", {}, "Output"), tabs, out,
    h("h2", {}, "Files"), files, h("h2", {}, "Output manifest"), manifest,
    h("h2", {}, "Audit trail"), slider, at, then, trail);

  async function update() {
    const t = unwrap(await call({ ShowTask: { job, task } }), "Task").state;
    const spec = t.spec;
    const cmd = spec.command_line.shell ?? (spec.command_line.argv || []).join(" ");
    const r = t.last_result;
    running = !["completed"].includes(t.status);
    info.replaceChildren(h("dl", { class: "kv", "data-testid": "task-info" },
      h("dt", {}, "Command"), h("dd", {}, h("code", { "data-testid": "command" }, cmd)),
      h("dt", {}, "State"), h("dd", {}, taskBadge(t)),
      h("dt", {}, "Node"), h("dd", {}, t.placement ? link(`/ui/pools/${encodeURIComponent(t.placement.pool)}/nodes/${encodeURIComponent(t.placement.node)}`, t.placement.node) : "–"),
      h("dt", {}, "Attempt"), h("dd", {}, `${t.attempt} (${t.retry_count} retries, ${t.requeue_count} requeues)`),
      h("dt", {}, "Result"), h("dd", { "data-testid": "result" }, r ? `exit code ${r.exit_code ?? "–"}${r.signal ? `, signal ${r.signal}` : ""}${r.failure ? `, ${r.failure[0]}: ${r.failure[1]}` : ""} in ${num(r.duration_ms)} ms` : "–"),
      h("dt", {}, "Added"), h("dd", {}, fmtTime(t.added_at)),
      h("dt", {}, "Started"), h("dd", {}, t.started_at ? fmtTime(t.started_at)
        // An attempt that ends within 20 ms reports its start with its end.
        : (t.completed_at && r ? `${fmtTime(new Date(new Date(t.completed_at).getTime() - r.duration_ms))} (from its duration: its start was reported with its end)` : "–")),
      h("dt", {}, "Completed"), h("dd", {}, fmtTime(t.completed_at))));
    manifest.replaceChildren(t.outputs.length === 0 ? h("p", { class: "muted" }, "no outputs recorded") :
      h("table", {}, h("tr", {}, h("th", {}, "Path"), h("th", {}, "Destination"), h("th", { class: "num" }, "Size"), h("th", {}, "SHA-256")),
        t.outputs.map((o) => h("tr", {}, h("td", {}, o.path || o.source || ""), h("td", {}, o.destination ? JSON.stringify(o.destination) : (o.container ? `${o.container}/${o.name || o.blob || ""}` : "")),
          h("td", { class: "num" }, num(o.size)), h("td", {}, h("code", {}, (o.sha256 || "").slice(0, 16)))))));
    if (running) {
      const w = await get("/api/waits", { job, task });
      why.replaceChildren(w.reasons.length ? h("div", { class: "banner" }, h("b", {}, "Why it waits: "),
        h("ul", { class: "reasons" }, w.reasons.map((x) => h("li", { "data-testid": "reason" }, x)))) : "");
    } else {
      why.replaceChildren();
    }
  }

  async function tail() {
    try {
      const o = await get("/api/output", { job, task, stream, offset });
      if (o.offset < offset) { out.textContent = ""; }
      if (o.text) {
        const atEnd = out.scrollTop + out.clientHeight >= out.scrollHeight - 4;
        out.textContent = (out.textContent + o.text).slice(-TAIL_MAX);
        if (atEnd) out.scrollTop = out.scrollHeight;
      }
      offset = o.next;
    } catch (e) {
      if (!out.textContent) out.textContent = `(no ${stream} yet: ${e.message})`;
    }
  }

  async function listFiles() {
    try {
      const r = unwrap(await call({ ListTaskFiles: { job, task, attempt: 0, path: "", recursive: true } }), "Files");
      const entries = (r.answer.Listing || []).filter((e) => e.kind === "file");
      files.replaceChildren(h("table", { "data-testid": "task-files" },
        h("tr", {}, h("th", {}, "Path"), h("th", { class: "num" }, "Size"), h("th", {}, "Modified")),
        entries.map((e) => h("tr", {},
          h("td", {}, h("a", { href: `/api/download?${new URLSearchParams({ kind: "task", job, task, path: e.path })}` }, e.path)),
          h("td", { class: "num" }, num(e.size)), h("td", {}, fmtTime(e.modified))))));
    } catch (e) {
      files.replaceChildren(h("p", { class: "muted" }, `files unavailable: ${e.message}`));
    }
  }

  async function audit() {
    const a = await get("/api/audit", { entity });
    history = a.history;
    const rows = [];
    const tries = new Map();
    for (const e of history) {
      const ev = e.event[e.event_type] || {};
      if (ev.attempt !== undefined) {
        const row = tries.get(ev.attempt) || { attempt: ev.attempt };
        if (ev.placement) row.node = ev.placement.node;
        if (e.event_type === "TaskStarted") row.started = e.recorded_at;
        if (ev.result) {
          row.exit = ev.result.exit_code;
          row.failure = ev.result.failure ? `${ev.result.failure[0]}: ${ev.result.failure[1]}` : "";
          row.ended = e.recorded_at;
          // A start within 20 ms of the end is reported with the end.
          if (!row.started) row.started = new Date(new Date(e.recorded_at).getTime() - ev.result.duration_ms).toISOString();
        }
        tries.set(ev.attempt, row);
      }
      rows.push(h("tr", {}, h("td", {}, fmtTime(e.recorded_at)), h("td", {}, e.event_type), h("td", {}, e.principal),
        h("td", {}, Object.entries(e.changed).map(([k, [, after]]) => `${k} → ${typeof after === "object" ? JSON.stringify(after) : after}`).join("; "))));
    }
    attempts.replaceChildren(h("table", { "data-testid": "attempts" },
      h("tr", {}, h("th", { class: "num" }, "Attempt"), h("th", {}, "Node"), h("th", {}, "Started"), h("th", {}, "Ended"), h("th", { class: "num" }, "Exit"), h("th", {}, "Failure")),
      [...tries.values()].map((r) => h("tr", {}, h("td", { class: "num" }, r.attempt), h("td", {}, r.node || ""), h("td", {}, fmtTime(r.started)),
        h("td", {}, fmtTime(r.ended)), h("td", { class: "num" }, r.exit ?? ""), h("td", {}, r.failure || "")))));
    trail.replaceChildren(h("table", { "data-testid": "audit" },
      h("tr", {}, h("th", {}, "Recorded"), h("th", {}, "Event"), h("th", {}, "By"), h("th", {}, "Changed")), rows));
  }

  // The slider spans the task's life: its state at the chosen instant is
  // rebuilt by the server from the log (lote audit --at).
  async function showAt() {
    if (!history.length) return;
    // Milliseconds here, microseconds in the log: the first instant shown
    // is the millisecond after the first event, so it includes it.
    const t0 = new Date(history[0].recorded_at).getTime() + 1;
    const t1 = Math.max(new Date(history[history.length - 1].recorded_at).getTime() + 1, t0 + 1);
    const when = new Date(t0 + ((t1 - t0) * Number(slider.value)) / 1000);
    at.textContent = `state at ${when.toISOString()}`;
    const a = await get("/api/audit", { entity, at: when.toISOString() });
    const s = a.state || {};
    then.replaceChildren(h("p", {}, badge(s.status || "absent"), ` attempt ${s.attempt ?? 0}`,
      s.placement ? ` on ${s.placement.node}` : "", ` — ${a.history.length} of ${history.length} events by then`));
  }
  slider.addEventListener("input", throttled(150, showAt));

  await update();
  await audit();
  await showAt();
  await tail();
  await listFiles();
  const timer = setInterval(() => { if (running) tail(); }, 1000);
  // Filtered before throttling: a throttled call keeps only the latest
  // change, and an unrelated one after the task's own would drop it.
  const reread = throttled(500, async () => {
    await update();
    await audit();
    await tail();
    if (!running) await listFiles();
  });
  return {
    refresh: async (change) => {
      if (change && !touches(change, [entity])) return;
      await reread();
    },
    dispose: () => clearInterval(timer),
  };
}
