// The account's jobs: progress bars, filters and search kept in the address.
import { h, call, unwrap, link, num, badge, setQuery, throttled } from "../app.js";

export function progress(counts, total) {
  const c = counts || {};
  const all = Math.max(total || 0, (c.active || 0) + (c.running || 0) + (c.succeeded || 0) + (c.failed || 0));
  const pct = (n) => `${all ? (100 * (n || 0)) / all : 0}%`;
  const bar = h("div", { class: "bar", "data-testid": "progress", title: `${num(c.succeeded)} succeeded, ${num(c.failed)} failed, ${num(c.running)} running, ${num(c.active)} queued` });
  for (const [cls, n] of [["ok", c.succeeded], ["bad", c.failed], ["run", c.running]]) {
    const span = h("span", { class: cls });
    span.style.width = pct(n);
    bar.append(span);
  }
  const done = (c.succeeded || 0) + (c.failed || 0);
  return h("div", { class: "row" }, bar, h("span", { class: "muted", "data-testid": "progress-text" }, `${num(done)} / ${num(all)}`));
}

export async function render({ root, query }) {
  const state = h("select", { "data-testid": "job-state-filter" },
    ["", "active", "disabled", "terminating", "completed"].map((s) => h("option", { value: s }, s || "any state")));
  const search = h("input", { placeholder: "search job ids", "data-testid": "job-search" });
  state.value = query.get("state") || "";
  search.value = query.get("q") || "";
  const body = h("div");
  root.append(h("h1", {}, "Jobs"), h("div", { class: "row" }, state, search), body);
  let jobs = [];

  function draw() {
    const s = state.value, q = search.value.trim();
    setQuery({ state: s, q });
    const shown = jobs.filter((j) => (!s || j.state.status === s) && (!q || j.state.spec.id.includes(q)));
    body.replaceChildren(h("table", { "data-testid": "jobs" },
      h("tr", {}, h("th", {}, "Job"), h("th", {}, "Pool"), h("th", {}, "State"), h("th", {}, "Progress"), h("th", { class: "num" }, "Queued"), h("th", { class: "num" }, "Running")),
      shown.map((j) => h("tr", { "data-testid": `job-row-${j.state.spec.id}` },
        h("td", {}, link(`/ui/jobs/${encodeURIComponent(j.state.spec.id)}`, j.state.spec.id)),
        h("td", {}, link(`/ui/pools/${encodeURIComponent(j.state.spec.pool)}`, j.state.spec.pool)),
        h("td", {}, badge(j.state.status)),
        h("td", {}, progress(j.state.task_counts, j.state.tasks_added)),
        h("td", { class: "num" }, num((j.state.task_counts || {}).active)),
        h("td", { class: "num" }, num((j.state.task_counts || {}).running))))),
      h("p", { class: "muted" }, `${shown.length} of ${jobs.length} jobs`));
  }
  state.addEventListener("change", draw);
  search.addEventListener("input", draw);

  async function update() {
    jobs = unwrap(await call("ListJobs"), "Jobs");
    draw();
  }
  await update();
  return { refresh: throttled(500, update) };
}
