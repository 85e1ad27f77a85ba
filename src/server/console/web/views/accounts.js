// The operator's page: every account, enable / disable, key regeneration.
import { h, call, unwrap, badge, fmtTime, act } from "../app.js";

export async function render({ root }) {
  const body = h("div");
  const name = h("input", { placeholder: "new account name", "data-testid": "new-account" });
  const shown = h("pre", { "data-testid": "keys", hidden: true });
  root.append(h("h1", {}, "Accounts"),
    h("div", { class: "row" }, name, h("button", { class: "primary", onclick: () => act("Create account", async () => {
      await call({ CreateAccount: { name: name.value.trim(), request_id: null } });
      name.value = "";
      await update();
    }) }, "Create")), shown, body);

  async function regenerate(account, key) {
    await call({ RegenerateKey: { name: account, key } });
    const k = unwrap(await call({ ShowKeys: { name: account } }), "Keys");
    shown.hidden = false;
    shown.textContent = `account ${account}: new ${key} key ${key === "primary" ? k.primary : k.secondary}\n(shown once here; sessions opened with the old key have ended)`;
  }

  async function update() {
    const list = unwrap(await call("ListAccounts"), "Accounts");
    body.replaceChildren(h("table", { "data-testid": "accounts" },
      h("tr", {}, h("th", {}, "Account"), h("th", {}, "State"), h("th", {}, "Created"), h("th", {}, "Keys rotated"), h("th", {}, "")),
      list.map((a) => h("tr", { "data-testid": `account-row-${a.name}` }, h("td", {}, a.name), h("td", {}, badge(a.status)),
        h("td", {}, fmtTime(a.created_at)), h("td", {}, fmtTime(a.keys_rotated_at)),
        h("td", {},
          a.status === "disabled"
            ? h("button", { onclick: () => act(`Enable ${a.name}`, () => call({ EnableAccount: { name: a.name } }).then(update)) }, "Enable")
            : h("button", { class: "danger", "data-testid": `disable-${a.name}`, onclick: () => act(`Disable ${a.name}`, () => call({ DisableAccount: { name: a.name } }).then(update)) }, "Disable"), " ",
          h("button", { onclick: () => act("Regenerate primary key", () => regenerate(a.name, "primary").then(update)) }, "Regenerate primary"), " ",
          h("button", { onclick: () => act("Regenerate secondary key", () => regenerate(a.name, "secondary").then(update)) }, "Regenerate secondary"))))));
  }
  await update();
  return { refresh: update };
}
