// The account's live event tail, filtered by entity and event type.
import { h, setQuery, fmtTime, liveEvents } from "../app.js";

const KEEP = 500;

export function render({ root, query }) {
  const entity = h("input", { placeholder: "entity prefix, e.g. task/acme/frames/", "data-testid": "event-entity" });
  const type = h("input", { placeholder: "event type, e.g. TaskCompleted", "data-testid": "event-type" });
  entity.value = query.get("entity") || "";
  type.value = query.get("type") || "";
  const status = h("span", { class: "muted" }, "waiting for events…");
  const body = h("tbody");
  root.append(h("h1", {}, "Events"), h("div", { class: "row" }, entity, type, status),
    h("table", { "data-testid": "events" }, h("thead", {}, h("tr", {}, h("th", { class: "num" }, "Position"), h("th", {}, "Recorded"),
      h("th", {}, "Entity"), h("th", {}, "Event"), h("th", {}, "By"), h("th", {}, "Data"))), body));
  let seen = 0, skipped = 0;
  const keepFilters = () => setQuery({ entity: entity.value, type: type.value });
  entity.addEventListener("input", keepFilters);
  type.addEventListener("input", keepFilters);
  liveEvents(true);
  function show(change) {
    skipped += change.skipped;
    for (const ev of change.events || []) {
      seen += 1;
      if (entity.value && !ev.entity.startsWith(entity.value)) continue;
      if (type.value && !ev.event_type.toLowerCase().includes(type.value.toLowerCase())) continue;
      const principal = typeof ev.principal === "object" ? Object.entries(ev.principal).map(([k, v]) => `${k}:${JSON.stringify(v)}`).join("") : String(ev.principal);
      body.prepend(h("tr", { "data-testid": "event-row" }, h("td", { class: "num" }, ev.position), h("td", {}, fmtTime(ev.recorded_at)),
        h("td", {}, ev.entity), h("td", {}, ev.event_type), h("td", {}, principal), h("td", {}, h("code", {}, ev.data.slice(0, 300)))));
    }
    while (body.children.length > KEEP) body.lastChild.remove();
    status.textContent = `${seen} events since this page opened${skipped ? `, ${skipped} not shown (faster than a page can show)` : ""}`;
  }
  return { refresh: show, dispose: () => liveEvents(false) };
}
