// A new import: an archive from this computer (sent to the presigned upload
// URL, past API Gateway's 10 MB limit, with the bytes sent shown) or from a
// URL the server fetches.

import { api, upload } from "./api.js";
import { bar, bytes, checkbox, errorBox, field, h, notify, show } from "./dom.js";

const VISIBILITIES = ["", "private", "internal", "public"];

export async function importView() {
  const path = h("input", { type: "text", name: "path", required: true, pattern: "[A-Za-z0-9_][A-Za-z0-9_.\\-]*", autocomplete: "off" });
  const name = h("input", { type: "text", name: "name", autocomplete: "off" });
  const namespace = h("input", { type: "text", name: "namespace", autocomplete: "off" });
  const overwrite = checkbox("Overwrite the project if it exists (its content is replaced once the import finished)", "overwrite");
  const description = h("textarea", { name: "description", rows: "2" });
  const visibility = h("select", { name: "visibility" }, VISIBILITIES.map((value) => h("option", { value }, value || "as in the archive")));
  const fromFile = h("input", { type: "radio", name: "source", value: "file", id: "source-file", checked: true });
  const fromUrl = h("input", { type: "radio", name: "source", value: "url", id: "source-url" });
  const file = h("input", { type: "file", name: "file", accept: ".tar.gz,.tgz,application/gzip" });
  const url = h("input", { type: "url", name: "url", placeholder: "https://…/export.tar.gz" });
  const fileField = field("Export archive (.tar.gz)", file);
  const urlField = field("Archive URL", url, "Fetched by the server: https, and a public address.");
  urlField.hidden = true;
  const pick = () => {
    fileField.hidden = !fromFile.checked;
    urlField.hidden = !fromUrl.checked;
  };
  fromFile.addEventListener("change", pick);
  fromUrl.addEventListener("change", pick);
  const progress = h("div", { class: "panel", "aria-live": "polite" });
  const submit = h("button", { type: "submit" }, "Start import");
  const form = h(
    "form",
    { class: "card", onsubmit: start },
    field("Project path", path, "The new project's path, in your namespace unless you name another."),
    field("Project name (optional)", name),
    field("Namespace (optional)", namespace),
    overwrite,
    h(
      "fieldset",
      {},
      h("legend", {}, "Archive"),
      h("div", { class: "field check" }, fromFile, h("label", { for: "source-file" }, "From this computer")),
      h("div", { class: "field check" }, fromUrl, h("label", { for: "source-url" }, "From a URL")),
      fileField,
      urlField,
    ),
    h(
      "fieldset",
      {},
      h("legend", {}, "Override the archive's settings (optional)"),
      field("Description", description),
      field("Visibility", visibility),
    ),
    submit,
  );
  return h("section", {}, h("h1", {}, "New import"), form, progress);

  async function start(event) {
    event.preventDefault();
    const data = new FormData();
    data.set("path", path.value.trim());
    if (name.value.trim()) data.set("name", name.value.trim());
    if (namespace.value.trim()) data.set("namespace", namespace.value.trim());
    if (overwrite.querySelector("input").checked) data.set("overwrite", "true");
    if (description.value.trim()) data.set("override_params[description]", description.value.trim());
    if (visibility.value) data.set("override_params[visibility]", visibility.value);
    submit.disabled = true;
    try {
      if (fromUrl.checked) {
        if (!url.value) throw new Error("Name the archive's URL.");
        data.set("url", url.value);
        const { data: project } = await api("/projects/remote-import", { method: "POST", form: data });
        notify("The server fetches the archive, then imports it.");
        location.hash = `#/projects/${project.id}`;
        return;
      }
      const chosen = file.files[0];
      if (!chosen) throw new Error("Choose an export archive.");
      const { data: project } = await api("/projects/import/upload-url", { method: "POST", form: data });
      const sent = (loaded, total) => show(progress, bar("Bytes sent", loaded, total, `${bytes(loaded)} of ${bytes(total)}`));
      sent(0, chosen.size);
      await upload(project.upload.url, chosen, sent);
      notify("Uploaded: the import starts.");
      location.hash = `#/projects/${project.id}`;
    } catch (error) {
      progress.append(errorBox(error));
    } finally {
      submit.disabled = false;
    }
  }
}
