// The account's application packages and their versions.
import { h, call, unwrap, num, fmtTime } from "../app.js";

export async function render({ root }) {
  const packages = unwrap(await call("ListPackages"), "Packages");
  root.append(h("h1", {}, "Application packages"), packages.length === 0
    ? h("p", { class: "muted" }, "No packages yet: lote package upload ID VERSION FILE.zip")
    : h("table", { "data-testid": "packages" }, h("tr", {}, h("th", {}, "Package"), h("th", {}, "Versions"), h("th", {}, "Default")),
      packages.map((p) => h("tr", {}, h("td", {}, p.id),
        h("td", {}, p.versions.map((v) => `${v.version} (${num(v.size)} bytes, ${fmtTime(v.uploaded_at)})`).join(", ")),
        h("td", {}, p.default_version || "–")))));
}
