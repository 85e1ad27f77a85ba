// The account's blob containers: browse, download, upload.
import { h, call, put, unwrap, num, fmtTime, act, setQuery } from "../app.js";

export async function render({ root, query }) {
  const containers = h("div");
  const list = h("div");
  let container = query.get("container") || "";
  const file = h("input", { type: "file", "data-testid": "upload-file" });
  const name = h("input", { placeholder: "blob name (default: the file's)", "data-testid": "upload-name" });
  const target = h("input", { placeholder: "container", "data-testid": "upload-container", value: container });
  root.append(h("h1", {}, "Blobs"), containers,
    h("h2", {}, "Upload"),
    h("div", { class: "row" }, target, name, file, h("button", { class: "primary", "data-testid": "upload", onclick: () => act("Upload", async () => {
      const f = file.files[0];
      if (!f) throw new Error("choose a file");
      await put("/api/upload", { container: target.value, name: name.value || f.name }, f);
      container = target.value;
      await update();
    }) }, "Upload")),
    list);

  async function update() {
    const names = unwrap(await call("ListContainers"), "Containers");
    if (!container && names.length) container = names[0];
    setQuery({ container });
    containers.replaceChildren(h("div", { class: "row" }, "Containers:", names.length === 0 ? h("span", { class: "muted" }, "none yet") :
      names.map((c) => h("button", { class: c === container ? "primary" : "", onclick: () => { container = c; target.value = c; update(); } }, c))));
    if (!container) { list.replaceChildren(); return; }
    const r = unwrap(await call({ ListBlobs: { container, prefix: "", after: null, limit: 1000 } }), "Blobs");
    list.replaceChildren(h("h2", {}, container), h("table", { "data-testid": "blobs" },
      h("tr", {}, h("th", {}, "Name"), h("th", { class: "num" }, "Size"), h("th", {}, "Uploaded"), h("th", {}, "SHA-256")),
      r.blobs.map((b) => h("tr", {},
        h("td", {}, h("a", { href: `/api/download?${new URLSearchParams({ kind: "blob", container, name: b.name })}` }, b.name)),
        h("td", { class: "num" }, num(b.size)), h("td", {}, fmtTime(b.uploaded_at)), h("td", {}, h("code", {}, b.sha256.slice(0, 16)))))),
      r.next ? h("p", { class: "muted" }, "more than 1,000 blobs: lote blob list shows them all") : null);
  }
  await update();
}
