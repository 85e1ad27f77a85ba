// One pool: the node heatmap (Batch Explorer's colour groups), its nodes
// and running tasks over time from the pool's recorded samples, autoscale
// (evaluate with trace, enable / disable, run history, and a replay of what
// a formula would have done beside what happened), and actions.
import { h, call, get, unwrap, link, num, badge, act, fmtTime, navigate, throttled } from "../app.js";
import { lineChart } from "../chart.js";
import { every } from "../app.js";

// Batch Explorer's groups: idle; running (shaded by slots in use);
// waiting; transitions; errors; offline.
const groups = {
  idle: "idle", running: "running", waitingForStartTask: "waiting",
  creating: "transition", starting: "transition", rebooting: "transition", leavingPool: "transition",
  startTaskFailed: "error", unusable: "error", offline: "offline",
};
const legendOrder = [["idle", "idle"], ["running", "running"], ["waiting", "waiting for start task"],
  ["transition", "creating / starting / rebooting / leaving"], ["error", "start task failed / unusable"], ["offline", "offline"]];

function shade(node) {
  const slots = (node.agent && node.agent.task_slots) || 1;
  const used = node.running_tasks / slots;
  for (const step of [0.25, 0.5, 0.75, 0.99]) if (used <= step) return step;
  return 1;
}

export async function render({ root, params }) {
  const pool = params.pool;
  const head = h("div");
  const banner = h("div");
  const heat = h("div");
  const charts = h("div", { class: "cards" });
  const nodesTable = h("div");
  const history = h("div");
  let highlight = null;

  // Controls: built once, so typing is never lost to a refresh.
  const target = h("input", { type: "number", min: 0, style: { width: "80px" }, "data-testid": "resize-target" });
  const formula = h("textarea", { "data-testid": "formula", placeholder: "$TargetDedicatedNodes = min(10, $PendingTasks.GetSample(1));" });
  const interval = h("input", { type: "number", min: 5, value: 300, style: { width: "80px" } });
  const evalOut = h("div", { "data-testid": "evaluation" });
  const replayOut = h("div", { "data-testid": "replay" });
  const controls = h("div", {},
    h("h2", {}, "Size"),
    h("div", { class: "row" }, "Target nodes", target,
      h("button", { "data-testid": "resize", onclick: () => act("Resize", () =>
        call({ ResizePool: { pool, target_nodes: Number(target.value), deallocation: "requeue" } }).then(update)) }, "Resize"),
      h("button", { onclick: () => act("Stop resize", () => call({ StopResize: { pool } }).then(update)) }, "Stop resize")),
    h("h2", {}, "Autoscale formula"),
    formula,
    h("div", { class: "row" },
      h("button", { "data-testid": "evaluate", onclick: evaluate }, "Evaluate (with trace)"),
      h("button", { onclick: replay, "data-testid": "replay-button" }, "Replay over the recorded history"),
      "every", interval, "s",
      h("button", { class: "primary", onclick: () => act("Enable autoscale", () =>
        call({ EnableAutoscale: { pool, formula: formula.value, evaluation_interval_secs: Number(interval.value) } }).then(update)) }, "Enable autoscale"),
      h("button", { onclick: () => act("Disable autoscale", () => call({ DisableAutoscale: { pool } }).then(update)) }, "Disable autoscale")),
    evalOut, replayOut);

  async function evaluate() {
    evalOut.replaceChildren();
    try {
      const ev = unwrap(await call({ EvaluateAutoscale: { pool, formula: formula.value || null } }), "AutoscaleEvaluation");
      evalOut.append(
        h("p", {}, ev.run.error ? `Error ${ev.run.error.code}: ${ev.run.error.message}` : `Results: ${ev.run.results}`),
        h("p", { class: "muted" }, `Inputs: ${ev.run.inputs}`),
        h("pre", { "data-testid": "trace" }, ev.trace.map((t) => {
          const [kind, v] = Object.entries(t)[0];
          return `${v.line}:${v.col} ${kind} ${v.name || ""} = ${v.value || ""}`;
        }).join("\n") || "(no trace)"));
    } catch (e) {
      evalOut.append(h("p", { class: "muted" }, e.message));
    }
  }

  async function replay() {
    replayOut.replaceChildren();
    const to = new Date();
    const from = new Date(to.getTime() - 6 * 3600 * 1000);
    try {
      const steps = unwrap(await call({ ReplayAutoscale: { pool, formula: formula.value,
        from: from.toISOString(), to: to.toISOString(), every_secs: Number(interval.value) || 300 } }), "AutoscaleReplay");
      const t = (s) => new Date(s.at).getTime();
      replayOut.append(lineChart("What this formula would have done, beside what happened", [
        { name: "would set (target)", points: steps.filter((s) => s.would_target !== null).map((s) => [t(s), s.would_target]), dashed: true },
        { name: "real target", points: steps.map((s) => [t(s), s.actual_target]) },
        { name: "real nodes", points: steps.map((s) => [t(s), s.actual_nodes]) },
      ], "replay-chart"));
    } catch (e) {
      replayOut.append(h("p", { class: "muted" }, e.message));
    }
  }

  root.append(h("h1", {}, "Pool ", pool), head, banner, h("h2", {}, "Nodes"), heat, charts, nodesTable, controls, h("h2", {}, "Autoscale runs"), history);

  function drawHeatmap(nodes) {
    const legend = h("div", { class: "legend", "data-testid": "legend" }, legendOrder.map(([g, label]) =>
      h("span", { onclick: () => { highlight = highlight === g ? null : g; drawHeatmap(nodes); } },
        h("i", { class: `tile ${g}` }), `${label} (${nodes.filter((n) => (groups[n.state.state] || "offline") === g).length})`)));
    const tiles = nodes.map((n) => {
      const g = groups[n.state.state] || "offline";
      const classes = ["tile", g];
      if (highlight && highlight !== g) classes.push("dim");
      const tile = h("div", { class: classes.join(" "), title: `${n.state.id}: ${n.state.state}, ${n.state.running_tasks} task(s)`,
        "data-testid": "tile", "data-state": n.state.state, "data-node": n.state.id,
        onclick: () => navigate(`/ui/pools/${encodeURIComponent(pool)}/nodes/${encodeURIComponent(n.state.id)}`) });
      if (g === "running") tile.style.opacity = String(0.35 + 0.65 * shade(n.state));
      return tile;
    });
    heat.replaceChildren(legend, h("div", { class: "heatmap", "data-testid": "heatmap" }, tiles));
  }

  async function update() {
    const p = unwrap(await call({ ShowPool: { pool } }), "Pool").state;
    const nodes = unwrap(await call({ ListNodes: { pool } }), "Nodes");
    target.placeholder = String(p.target_nodes);
    if (p.autoscale && !formula.value) formula.value = p.autoscale[0];
    head.replaceChildren(h("dl", { class: "kv" },
      h("dt", {}, "State"), h("dd", {}, badge(p.status), " ", p.resize !== "steady" ? `(${p.resize})` : ""),
      h("dt", {}, "Target nodes"), h("dd", { "data-testid": "target" }, num(p.target_nodes)),
      h("dt", {}, "Slots per node"), h("dd", {}, num(p.spec.node_size.task_slots)),
      h("dt", {}, "Autoscale"), h("dd", {}, p.autoscale ? `every ${p.autoscale[1]} s` : "off"),
      h("dt", {}, "Scheduling"), h("dd", {}, p.spec.scheduling)));
    const failed = nodes.filter((n) => n.state.state === "startTaskFailed");
    banner.replaceChildren();
    if (failed.length) {
      banner.append(h("div", { class: "banner", "data-testid": "start-task-banner" },
        `${failed.length} of ${nodes.length} nodes failed their start task. `,
        link(`/ui/pools/${encodeURIComponent(pool)}/nodes/${encodeURIComponent(failed[0].state.id)}`, "View its output"), " ",
        h("button", { onclick: () => act("Reboot failed nodes", async () => {
          for (const n of failed) await call({ RebootNode: { pool, node: n.state.id } });
          await update();
        }) }, "Reboot the failed nodes")));
    }
    drawHeatmap(nodes);
    nodesTable.replaceChildren(h("table", { "data-testid": "nodes" },
      h("tr", {}, h("th", {}, "Node"), h("th", {}, "State"), h("th", { class: "num" }, "Running tasks"), h("th", {}, "Since"), h("th", {}, "")),
      nodes.map((n) => h("tr", {},
        h("td", {}, link(`/ui/pools/${encodeURIComponent(pool)}/nodes/${encodeURIComponent(n.state.id)}`, n.state.id)),
        h("td", {}, badge(n.state.state)),
        h("td", { class: "num" }, num(n.state.running_tasks)),
        h("td", {}, fmtTime(n.state.state_since)),
        h("td", {},
          h("button", { onclick: () => act(`Reboot ${n.state.id}`, () => call({ RebootNode: { pool, node: n.state.id } }).then(update)) }, "Reboot"), " ",
          h("button", { onclick: () => act(`Disable ${n.state.id}`, () => call({ DisableNode: { pool, node: n.state.id } }).then(update)) }, "Disable scheduling"), " ",
          h("button", { onclick: () => act(`Enable ${n.state.id}`, () => call({ EnableNode: { pool, node: n.state.id } }).then(update)) }, "Enable"), " ",
          h("button", { class: "danger", onclick: () => act(`Remove ${n.state.id}`, () => call({ RemoveNode: { pool, node: n.state.id, deallocation: "requeue" } }).then(update)) }, "Remove"))))));
  }

  async function slow() {
    const s = await get("/api/pool-samples", { pool });
    const col = (name) => s.names.indexOf(name);
    const t = (x) => new Date(x.at).getTime();
    const series = (name, label) => ({ name: label, points: s.samples.map((x) => [t(x), x.values[col(name)]]) });
    charts.replaceChildren(
      lineChart("Nodes over time", [series("$CurrentDedicatedNodes", "nodes"), series("$UsableNodeCount", "usable")], "nodes-chart"),
      lineChart("Tasks over time", [series("$RunningTasks", "running"), series("$ActiveTasks", "queued")], "tasks-chart"));
    const runs = unwrap(await call({ AutoscaleHistory: { pool, limit: 50 } }), "AutoscaleRuns");
    history.replaceChildren(runs.length === 0 ? h("p", { class: "muted" }, "no runs yet") : h("table", {},
      h("tr", {}, h("th", {}, "At"), h("th", {}, "Results"), h("th", { class: "num" }, "Target"), h("th", {}, "Error")),
      runs.map((r) => h("tr", {}, h("td", {}, fmtTime(r.at)), h("td", {}, h("code", {}, r.results)),
        h("td", { class: "num" }, `${r.target_before} → ${r.target_after ?? "–"}`), h("td", {}, r.error ? r.error.message : "")))));
  }

  await update();
  await slow().catch((e) => charts.replaceChildren(h("p", { class: "muted" }, e.message)));
  // Node states change with the tasks they run: any change may matter,
  // so the page re-reads at most once a second, its charts every 10 s.
  return {
    refresh: throttled(1000, update),
    dispose: every(10000, () => slow().catch(() => {})),
  };
}
