// Migrations by direct transfer: start one (POST /bulk_imports), list them,
// and follow each entity's status, per-relation counts and failures.

import { api, get } from "./api.js";
import { bar, errorBox, field, h, notify, poll, show, table, when } from "./dom.js";

const RUNNING = ["created", "started"];

export async function migrationsView() {
  const sourceUrl = h("input", { type: "url", name: "url", required: true, placeholder: "https://gitlab.example.com" });
  const sourceToken = h("input", { type: "password", name: "access_token", required: true, autocomplete: "off" });
  const sourcePath = h("input", { type: "text", name: "source_full_path", required: true, placeholder: "group/project" });
  const namespace = h("input", { type: "text", name: "destination_namespace", required: true });
  const slug = h("input", { type: "text", name: "destination_slug", required: true });
  const state = h("div", { class: "panel" });
  const submit = h("button", { type: "submit" }, "Start migration");
  const form = h(
    "form",
    { class: "card", onsubmit: async (event) => {
      event.preventDefault();
      submit.disabled = true;
      try {
        const { data: migration } = await api("/bulk_imports", { method: "POST", json: {
          configuration: { url: sourceUrl.value.trim(), access_token: sourceToken.value },
          entities: [{
            source_type: "project_entity",
            source_full_path: sourcePath.value.trim(),
            destination_namespace: namespace.value.trim(),
            destination_slug: slug.value.trim(),
          }],
        } });
        notify(`Migration ${migration.id} started.`);
        location.hash = `#/migrations/${migration.id}`;
      } catch (error) {
        show(state, errorBox(error));
      } finally {
        submit.disabled = false;
      }
    } },
    h(
      "fieldset",
      {},
      h("legend", {}, "Source instance"),
      field("Source URL", sourceUrl, "The GitLab instance (or another of these servers) the project comes from."),
      field("Source access token", sourceToken, "A token of the source with the api scope; sent to the source only, never shown again."),
      field("Source project path", sourcePath),
    ),
    h(
      "fieldset",
      {},
      h("legend", {}, "Destination here"),
      field("Destination namespace", namespace),
      field("Destination slug", slug),
    ),
    submit,
  );
  const me = await get("/user");
  namespace.value = me.username;
  const migrations = await get("/bulk_imports?per_page=50");
  const list = migrations.length
    ? table("Your migrations", ["Migration", "Status", "Source", "Started", "Failures"], migrations.map((migration) => [
      h("a", { href: `#/migrations/${migration.id}` }, `Migration ${migration.id}`),
      badge(migration.status),
      migration.source_url,
      when(migration.created_at),
      migration.has_failures ? "yes" : "no",
    ]))
    : h("p", {}, "No migration yet.");
  return h("section", {}, h("h1", {}, "Migrations"), state, form, h("h2", {}, "History"), list);
}

function badge(status) {
  return h("span", { class: `badge ${status}` }, status);
}

export async function migrationView(id) {
  const summary = h("div", { class: "panel" });
  const entities = h("div");
  const root = h("section", {}, h("h1", {}, `Migration ${id}`), summary, entities,
    h("p", {}, h("a", { href: "#/migrations" }, "All migrations")));
  poll(root, async () => {
    const migration = await get(`/bulk_imports/${id}`);
    const list = await get(`/bulk_imports/${id}/entities`);
    const running = RUNNING.includes(migration.status);
    show(
      summary,
      h("p", {}, "Status: ", badge(migration.status), ` · from ${migration.source_url} · started ${when(migration.created_at)}`),
      running ? h("button", { type: "button", class: "secondary", onclick: async () => {
        try {
          await api(`/bulk_imports/${id}/cancel`, { method: "POST" });
          notify(`Migration ${id} canceled.`);
        } catch (error) {
          summary.append(errorBox(error));
        }
      } }, "Cancel migration") : null,
    );
    show(entities, list.map(entity));
    return running;
  });
  return root;
}

function entity(item) {
  const relations = Object.keys(item.stats || {}).sort();
  const project = item.project_id
    ? h("a", { href: `#/projects/${item.project_id}` }, item.destination_full_path)
    : item.destination_full_path;
  return h(
    "article",
    { class: "card entity" },
    h("h2", {}, `${item.source_full_path} → `, project),
    h("p", {}, "Status: ", badge(item.status)),
    relations.length
      ? h("div", { class: "bars" }, relations.map((relation) => {
        const counts = item.stats[relation];
        return bar(relation, counts.imported, counts.fetched, `${counts.imported} of ${counts.fetched} imported`);
      }))
      : null,
    item.failures?.length
      ? table("Failures", ["Relation", "Message", "Class"], item.failures.map((failure) => [
        failure.relation || failure.relation_name || "", failure.exception_message, failure.exception_class,
      ]))
      : null,
  );
}
