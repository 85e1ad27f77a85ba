// The account's pools: size, nodes by state, autoscale.
import { h, call, unwrap, link, num, badge, throttled, nodeStates } from "../app.js";

export async function render({ root }) {
  const body = h("div");
  root.append(h("h1", {}, "Pools"), body);
  async function update() {
    const pools = unwrap(await call("ListPools"), "Pools");
    const nodes = await nodeStates(pools);
    body.replaceChildren(pools.length === 0
      ? h("p", { class: "muted" }, "No pools yet: lote pool create NAME --nodes N --slots S")
      : h("table", { "data-testid": "pools" },
        h("tr", {}, h("th", {}, "Pool"), h("th", {}, "State"), h("th", { class: "num" }, "Target"),
          h("th", {}, "Nodes by state"), h("th", {}, "Autoscale")),
        pools.map((p, i) => h("tr", {},
            h("td", {}, link(`/ui/pools/${encodeURIComponent(p.state.spec.id)}`, p.state.spec.id)),
            h("td", {}, badge(p.state.status)),
            h("td", { class: "num" }, num(p.state.target_nodes)),
            h("td", {}, nodes[i].words || "none"),
            h("td", {}, p.state.autoscale ? "on" : "off")))));
  }
  await update();
  return { refresh: throttled(1000, update) };
}
