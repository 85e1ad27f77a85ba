// The account's job schedules: state, recurrence, next run, actions.
import { h, call, unwrap, badge, fmtTime, act, link, throttled } from "../app.js";

export async function render({ root }) {
  const body = h("div");
  root.append(h("h1", {}, "Job schedules"), body);
  async function update() {
    const list = unwrap(await call("ListSchedules"), "Schedules");
    body.replaceChildren(list.length === 0 ? h("p", { class: "muted" }, "No schedules: lote schedule create …") :
      h("table", { "data-testid": "schedules" }, h("tr", {}, h("th", {}, "Schedule"), h("th", {}, "State"), h("th", {}, "Next run"), h("th", {}, "Last job"), h("th", {}, "")),
        list.map((s) => {
          const st = s.state;
          const id = st.spec ? st.spec.id : "?";
          const runs = [...(st.active || []), ...(st.recent || [])];
          const last = runs.length ? runs.reduce((a, b) => (a.run > b.run ? a : b)).job : null;
          return h("tr", {}, h("td", {}, id), h("td", {}, badge(st.status)), h("td", {}, fmtTime(st.next_due)),
            h("td", {}, last ? link(`/ui/jobs/${encodeURIComponent(last)}`, last) : "–"),
            h("td", {},
              h("button", { onclick: () => act("Disable", () => call({ DisableSchedule: { schedule: id } }).then(update)) }, "Disable"), " ",
              h("button", { onclick: () => act("Enable", () => call({ EnableSchedule: { schedule: id } }).then(update)) }, "Enable"), " ",
              h("button", { onclick: () => act("Run now", () => call({ RunScheduleNow: { schedule: id } }).then(update)) }, "Run now")));
        })));
  }
  await update();
  return { refresh: throttled(1000, update) };
}
