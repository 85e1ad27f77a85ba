// One job: counts and progress, every reason its tasks wait, the task
// table (paged and filtered on the server, exportable as CSV), actions.
import { h, call, get, unwrap, link, num, badge, taskBadge, act, fmtTime, setQuery, throttled, touches, navigate } from "../app.js";
import { progress } from "./jobs.js";

const PAGE = 50;

export async function render({ root, params, query, session }) {
  const job = params.job;
  const enc = encodeURIComponent(job);
  const head = h("div");
  const waits = h("div", { "data-testid": "waits" });
  const table = h("div");
  const state = h("select", { "data-testid": "task-state-filter" },
    ["", "active", "assigned", "running", "completed"].map((s) => h("option", { value: s }, s || "any state")));
  const search = h("input", { placeholder: "search task ids", "data-testid": "task-search" });
  state.value = query.get("state") || "";
  search.value = query.get("q") || "";
  // Cursors of the pages before this one, for "previous".
  const cursors = [];
  let after = query.get("after") || "";
  let next = null;
  const csv = h("a", { "data-testid": "csv" }, "Export CSV");
  const reason = h("input", { placeholder: "reason", value: "terminated from the console" });

  root.append(h("h1", {}, "Job ", job), head,
    h("div", { class: "row" },
      h("button", { "data-testid": "terminate", onclick: () => act("Terminate", () => call({ TerminateJob: { job, reason: reason.value } }).then(update)) }, "Terminate"), reason,
      h("button", { onclick: () => act("Disable", () => call({ DisableJob: { job, disable_tasks: "requeue" } }).then(update)) }, "Disable"),
      h("button", { onclick: () => act("Enable", () => call({ EnableJob: { job } }).then(update)) }, "Enable"),
      h("button", { class: "danger", onclick: () => {
        if (confirm(`Delete job ${job} and its tasks?`)) act("Delete", () => call({ DeleteJob: { job } }).then(() => navigate("/ui/jobs")));
      } }, "Delete")),
    h("h2", {}, "Why tasks wait"), waits,
    h("h2", {}, "Tasks"),
    h("div", { class: "row" }, state, search, csv), table);

  async function update() {
    const j = unwrap(await call({ ShowJob: { job } }), "Job").state;
    const c = j.task_counts || {};
    head.replaceChildren(h("dl", { class: "kv", "data-testid": "job-info" },
      h("dt", {}, "State"), h("dd", {}, badge(j.status), j.completion_reason ? ` (${j.completion_reason})` : ""),
      h("dt", {}, "Pool"), h("dd", {}, link(`/ui/pools/${encodeURIComponent(j.spec.pool)}`, j.spec.pool)),
      h("dt", {}, "Progress"), h("dd", {}, progress(c, j.tasks_added)),
      h("dt", {}, "Tasks"), h("dd", { "data-testid": "counts" },
        `${num(c.active)} queued, ${num(c.running)} running, ${num(c.succeeded)} succeeded, ${num(c.failed)} failed (${num(j.tasks_added)} added)`),
      h("dt", {}, "Created"), h("dd", {}, fmtTime(j.created_at)),
      j.completed_at ? [h("dt", {}, "Completed"), h("dd", {}, fmtTime(j.completed_at))] : null));
    const w = await get("/api/waits", { job });
    waits.replaceChildren(w.groups.length === 0
      ? h("p", { class: "muted" }, "No task waits.")
      : h("ul", { class: "reasons" }, w.groups.map((g) => h("li", { "data-testid": "wait-group" }, g.text))));
  }

  async function page() {
    const s = state.value, q = search.value.trim();
    setQuery({ state: s, q, after });
    csv.setAttribute("href", `/api/tasks.csv?${new URLSearchParams({ job, state: s, q })}`);
    const r = await get("/api/tasks", { job, state: s, q, after, limit: PAGE });
    next = r.next;
    table.replaceChildren(
      h("table", { "data-testid": "tasks" },
        h("tr", {}, h("th", {}, "Task"), h("th", {}, "State"), h("th", { class: "num" }, "Exit"), h("th", {}, "Node"), h("th", { class: "num" }, "Attempt"), h("th", {}, "Command")),
        r.items.map((t) => {
          const id = t.state.spec.id;
          const cmd = t.state.spec.command_line.shell ?? (t.state.spec.command_line.argv || []).join(" ");
          const result = t.state.last_result;
          return h("tr", { "data-testid": "task-row" },
            h("td", {}, link(`/ui/jobs/${enc}/tasks/${encodeURIComponent(id)}`, id, { "data-testid": "task-link" })),
            h("td", {}, taskBadge(t.state)),
            h("td", { class: "num" }, result && result.exit_code !== null ? result.exit_code : ""),
            h("td", {}, t.state.placement ? t.state.placement.node : ""),
            h("td", { class: "num" }, t.state.attempt),
            h("td", {}, h("code", {}, cmd)));
        })),
      h("div", { class: "row" },
        h("button", { disabled: cursors.length === 0 || null, onclick: () => { after = cursors.pop() || ""; page(); } }, "← Previous"),
        h("button", { "data-testid": "next-page", disabled: !next || null, onclick: () => { cursors.push(after); after = next; page(); } }, "Next →"),
        h("span", { class: "muted" }, `${r.items.length} shown`)));
  }

  const refilter = () => { cursors.length = 0; after = ""; page(); };
  state.addEventListener("change", refilter);
  search.addEventListener("input", refilter);
  await update();
  await page();
  const prefixes = [`job/${session.account}/${job}`, `task/${session.account}/${job}/`];
  // Filtered before throttling (a throttled call keeps only the latest
  // change: an unrelated one must not drop the job's own).
  const reread = throttled(400, async () => {
    await update();
    await page();
  });
  return {
    refresh: async (change) => {
      if (change && !touches(change, prefixes)) return;
      await reread();
    },
  };
}
