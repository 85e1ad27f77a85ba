// The account's apps: versions, default, parameters; and their runs with
// status and progress (a run's reprocessing jobs are shown beside it).
import { h, call, unwrap, link, badge, fmtTime, throttled } from "../app.js";
import { progress } from "./jobs.js";

const CANCEL_REASON = "the app run was cancelled";

function meta(job, name) {
  const m = ((job.state.spec || {}).metadata || []).find((x) => x.name === name);
  return m ? m.value : null;
}

// The run's status as `lote app job show` words it.
function runStatus(st) {
  const c = st.task_counts || {};
  const cancelled = st.completion_reason === CANCEL_REASON;
  if (st.status === "terminating") return cancelled ? "cancelling" : "running";
  if (st.status === "completed" || st.status === "deleted") {
    if (cancelled) return "cancelled";
    return (c.failed || 0) > 0 ? "failed" : "succeeded";
  }
  return (c.running || 0) + (c.succeeded || 0) + (c.failed || 0) > 0 ? "running" : "queued";
}

function params(def) {
  return def.parameters.map((p) => {
    const kind = typeof p.kind === "string" ? p.kind : Object.keys(p.kind)[0];
    return `${p.name} (${kind})${p.default !== null && p.default !== undefined ? ` = ${p.default}` : p.required ? " required" : ""}`;
  }).join(", ");
}

export async function render({ root }) {
  const body = h("div");
  root.append(h("h1", {}, "Apps"), body);
  async function update() {
    const apps = unwrap(await call("ListApps"), "Apps");
    const runs = unwrap(await call("ListJobs"), "Jobs").filter((j) => meta(j, "lote.app"));
    body.replaceChildren(
      apps.length === 0 ? h("p", { class: "muted" }, "No apps: lote app publish DIR (a program with its app.toml)") :
        h("table", { "data-testid": "apps" },
          h("tr", {}, h("th", {}, "App"), h("th", {}, "Default"), h("th", {}, "Versions"), h("th", {}, "Parameters"), h("th", {}, "Description")),
          apps.map((a) => {
            const versions = a.state.versions.map((v) => v.definition);
            const def = versions.find((d) => d.version === a.state.default_version) || versions[versions.length - 1];
            return h("tr", { "data-testid": `app-row-${def.name}` }, h("td", {}, def.name), h("td", {}, a.state.default_version || "–"),
              h("td", {}, versions.map((d) => d.version).join(", ")), h("td", {}, params(def)), h("td", {}, def.description));
          })),
      h("h2", {}, "Runs"),
      runs.length === 0 ? h("p", { class: "muted" }, "No runs: lote app run APP --param k=v …") :
        h("table", { "data-testid": "app-runs" },
          h("tr", {}, h("th", {}, "Run"), h("th", {}, "App"), h("th", {}, "Status"), h("th", {}, "Progress"), h("th", {}, "Created")),
          runs.map((j) => {
            const id = j.state.spec.id;
            return h("tr", { "data-testid": `run-row-${id}` },
              h("td", {}, link(`/ui/jobs/${encodeURIComponent(id)}`, id), meta(j, "lote.app.run") ? ` (reprocesses ${meta(j, "lote.app.run")})` : ""),
              h("td", {}, `${meta(j, "lote.app")} ${meta(j, "lote.app.version")}`),
              h("td", {}, badge(runStatus(j.state))),
              h("td", {}, progress(j.state.task_counts, j.state.tasks_added)),
              h("td", {}, fmtTime(j.state.created_at)));
          })));
  }
  await update();
  return { refresh: throttled(1000, update) };
}
