// The account at a glance: pools and their nodes by state, jobs by state,
// tasks queued / running / done, and how fast the log moves.
import { h, call, unwrap, link, num, throttled, nodeStates } from "../app.js";

function card(title, value, sub, testid) {
  return h("div", { class: "card", "data-testid": testid }, h("div", { class: "muted" }, title),
    h("div", { class: "big" }, value), sub ? h("div", { class: "muted" }, sub) : null);
}

export async function render({ root }) {
  const body = h("div");
  root.append(h("h1", {}, "Overview"), body);
  let lastHead = null;
  let lastAt = Date.now();
  let rate = 0;

  async function update() {
    const pools = unwrap(await call("ListPools"), "Pools");
    const jobs = unwrap(await call("ListJobs"), "Jobs");
    const nodes = await nodeStates(pools);
    const jobStates = {};
    const tasks = { active: 0, running: 0, succeeded: 0, failed: 0 };
    for (const j of jobs) {
      jobStates[j.state.status] = (jobStates[j.state.status] || 0) + 1;
      for (const [k, v] of Object.entries(j.state.task_counts || {})) tasks[k] = (tasks[k] || 0) + v;
    }
    const nodeCount = nodes.reduce((a, n) => a + n.count, 0);
    const rows = pools.map((p, i) => h("tr", { "data-testid": `pool-row-${p.state.spec.id}` },
        h("td", {}, link(`/ui/pools/${encodeURIComponent(p.state.spec.id)}`, p.state.spec.id)),
        h("td", { class: "num" }, num(p.state.target_nodes)),
        h("td", {}, nodes[i].words || "no nodes")));
    body.replaceChildren(
      h("div", { class: "cards" },
        card("Pools", num(pools.length), `${num(nodeCount)} nodes`, "card-pools"),
        card("Jobs", num(jobs.length), Object.entries(jobStates).map(([s, c]) => `${c} ${s}`).join(", "), "card-jobs"),
        card("Tasks queued", num(tasks.active), null, "card-queued"),
        card("Tasks running", num(tasks.running), null, "card-running"),
        card("Tasks done", num(tasks.succeeded + tasks.failed), `${num(tasks.failed)} failed`, "card-done"),
        card("Events / s", rate.toFixed(1), "in this account, lately", "card-rate")),
      h("h2", {}, "Pools"),
      h("table", {}, h("tr", {}, h("th", {}, "Pool"), h("th", { class: "num" }, "Target"), h("th", {}, "Nodes by state")), rows),
      h("h2", {}, "Jobs"),
      h("p", {}, link("/ui/jobs", `All ${num(jobs.length)} jobs →`)));
  }

  await update();
  const redraw = throttled(1000, update);
  return {
    async refresh(change) {
      const now = Date.now();
      if (lastHead !== null) rate = change.count / Math.max(0.25, (now - lastAt) / 1000);
      lastHead = change.head;
      lastAt = now;
      await redraw();
    },
  };
}
