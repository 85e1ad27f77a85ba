// Sign-in: an account's name and key, or the admin key (no account).
// The key goes to the server once, in a POST body; the page keeps only the
// session cookie the server sets (HttpOnly: no script can read it).
import { h } from "../app.js";

export function render({ root, signedIn }) {
  const account = h("input", { id: "account", name: "account", autocomplete: "username", "data-testid": "account" });
  const key = h("input", { id: "key", name: "key", type: "password", autocomplete: "current-password", "data-testid": "key" });
  const error = h("p", { class: "muted", "data-testid": "signin-error" });
  const form = h("form", { class: "card signin", "data-testid": "signin" },
    h("h1", {}, "Sign in to lote"),
    h("label", { for: "account" }, "Account (leave empty to sign in as the operator with the admin key)"),
    account,
    h("label", { for: "key" }, "Key"),
    key,
    h("div", { class: "row" }, h("button", { class: "primary", type: "submit", "data-testid": "signin-submit" }, "Sign in")),
    error);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    error.textContent = "";
    const res = await fetch("/api/session", {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ account: account.value.trim() || null, key: key.value.trim() }),
    });
    const body = await res.json().catch(() => ({}));
    key.value = "";
    if (!res.ok) {
      error.textContent = (body.error && body.error.message) || `sign-in failed (HTTP ${res.status})`;
      return;
    }
    signedIn(body);
  });
  root.append(form);
  account.focus();
}
