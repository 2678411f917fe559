// The user's projects, and one project: its import, its exports, its
// relations export, relation imports, export schedule, statistics, deletion.

import { api, download, get } from "./api.js";
import { bar, bytes, checkbox, errorBox, field, h, notify, poll, show, table, when } from "./dom.js";

const PER_PAGE = 20;
// The relations `POST /projects/import-relation` takes, as GitLab lists them.
const IMPORTABLE_RELATIONS = ["issues", "merge_requests", "milestones", "ci_pipelines"];
const RELATION_STATUS = { "-1": "failed", 0: "started", 1: "finished" };

export async function projectsView(page = currentPage()) {
  const search = new URLSearchParams(location.hash.split("?")[1] || "").get("search") || "";
  const query = new URLSearchParams({ page, per_page: PER_PAGE });
  if (search) query.set("search", search);
  const { data: projects, headers } = await api(`/projects?${query}`);
  const filter = h("input", { type: "search", name: "search", value: search });
  const form = h(
    "form",
    { class: "inline", role: "search", onsubmit: (event) => {
      event.preventDefault();
      location.hash = filter.value ? `#/projects?search=${encodeURIComponent(filter.value)}` : "#/projects";
    } },
    field("Filter by path", filter),
    h("button", { type: "submit" }, "Filter"),
  );
  const rows = await Promise.all(projects.map(async (project) => {
    const [imported, exported] = await Promise.all([
      get(`/projects/${project.id}/import`).catch(() => ({})),
      get(`/projects/${project.id}/export`).catch(() => ({})),
    ]);
    return [
      h("a", { href: `#/projects/${project.id}` }, project.path_with_namespace),
      statusBadge(imported.import_status),
      statusBadge(exported.export_status),
      when(project.created_at),
    ];
  }));
  const total = Number(headers.get("X-Total") || projects.length);
  const pages = Number(headers.get("X-Total-Pages") || 1);
  const pager = h(
    "nav",
    { class: "pager", "aria-label": "Pages" },
    h("button", { type: "button", disabled: page <= 1, onclick: () => goTo(page - 1) }, "Previous page"),
    h("span", {}, `Page ${page} of ${pages} (${total} projects)`),
    h("button", { type: "button", disabled: page >= pages, onclick: () => goTo(page + 1) }, "Next page"),
  );
  const root = h(
    "section",
    {},
    h("h1", {}, "Projects"),
    form,
    projects.length
      ? table("Your projects", ["Path", "Import", "Last export", "Created"], rows)
      : h("p", {}, search ? "No project matches." : "No project yet: start with a new import."),
    pager,
    h("p", {}, h("a", { class: "button", href: "#/import" }, "New import")),
  );
  return root;

  async function goTo(target) {
    pageNumber = target;
    const view = await projectsView(target);
    document.getElementById("main").replaceChildren(view);
    view.querySelector("h1").focus();
  }
}

let pageNumber = 1;
function currentPage() {
  if (!location.hash.startsWith("#/projects")) pageNumber = 1;
  return pageNumber;
}

function statusBadge(status) {
  return h("span", { class: `badge ${status || "none"}` }, status || "none");
}

export async function projectView(id) {
  const project = await get(`/projects/${id}?statistics=true`);
  const root = h("section", { class: "project" });
  const statisticsSection = h("section", { "aria-labelledby": "statistics-heading" });
  const importSection = h("section", { "aria-labelledby": "import-heading" });
  const exportSection = h("section", { "aria-labelledby": "export-heading" });
  const relationsSection = h("section", { "aria-labelledby": "relations-heading" });
  const relationImportSection = h("section", { "aria-labelledby": "relation-import-heading" });
  const scheduleSection = h("section", { "aria-labelledby": "schedule-heading" });
  show(
    root,
    h("h1", {}, project.path_with_namespace),
    project.description ? h("p", { class: "description" }, project.description) : null,
    statisticsSection,
    importSection,
    exportSection,
    relationsSection,
    relationImportSection,
    scheduleSection,
    deletion(project),
  );
  const refreshStatistics = async () => {
    const current = await get(`/projects/${id}?statistics=true`);
    show(statisticsSection, statistics(current.statistics));
  };
  show(statisticsSection, statistics(project.statistics));
  importPanel(importSection, project, refreshStatistics);
  exportPanel(exportSection, project);
  relationsPanel(relationsSection, project);
  relationImportPanel(relationImportSection, project);
  schedulePanel(scheduleSection, project);
  return root;
}

function statistics(stats) {
  if (!stats) return null;
  const items = [
    ["Storage", stats.storage_size],
    ["Records", stats.records_size],
    ["Repository", stats.repository_size],
    ["Wiki", stats.wiki_size],
    ["Uploads", stats.uploads_size],
    ["LFS objects", stats.lfs_objects_size],
    ["Exports", stats.exports_size],
  ];
  return [
    h("h2", { id: "statistics-heading" }, "Statistics"),
    h("dl", { class: "statistics" }, items.map(([name, value]) => h("div", {}, h("dt", {}, name), h("dd", {}, bytes(value))))),
  ];
}

function importPanel(section, project, whenDone) {
  const body = h("div", { class: "panel" });
  show(section, h("h2", { id: "import-heading" }, "Import"), body);
  let watched = false;
  poll(section, async () => {
    const state = await get(`/projects/${project.id}/import`);
    show(body, importState(state));
    const running = ["scheduled", "started"].includes(state.import_status);
    if (running) watched = true;
    else if (watched) await whenDone();
    return running;
  });
}

function importState(state) {
  const parts = [h("p", {}, "Status: ", statusBadge(state.import_status))];
  const progress = state.import_progress;
  if (progress && progress.archive_bytes) {
    const left = progress.estimated_seconds_left;
    parts.push(bar("Archive read", progress.archive_bytes_read, progress.archive_bytes,
      `${bytes(progress.archive_bytes_read)} of ${bytes(progress.archive_bytes)}, ${progress.invocations} invocation(s)${left ? `, about ${left} s left` : ""}`));
  }
  const stats = state.stats;
  if (stats && stats.fetched) {
    const relations = Object.keys(stats.fetched).sort();
    if (relations.length) {
      parts.push(h("h3", {}, "Relations"));
      parts.push(h("div", { class: "bars" }, relations.map((relation) => {
        const fetched = stats.fetched[relation] || 0;
        const imported = stats.imported?.[relation] || 0;
        const skipped = stats.skipped?.[relation] || 0;
        const text = `${imported} of ${fetched} imported${skipped ? `, ${skipped} skipped` : ""}`;
        return bar(relation, imported + skipped, fetched, text);
      })));
    }
  }
  if (state.records_imported !== undefined) parts.push(h("p", {}, `Records imported: ${state.records_imported}`));
  if (state.import_error) parts.push(h("p", { class: "error" }, `Import error: ${state.import_error}`));
  if (state.failed_relations?.length) {
    parts.push(table("Failed relations", ["Relation", "Message", "Line", "When"], state.failed_relations.map((failure) => [
      failure.relation_name, failure.exception_message, String(failure.line_number ?? ""), when(failure.created_at),
    ])));
  }
  return parts;
}

function exportPanel(section, project) {
  const state = h("div", { class: "panel", "aria-live": "polite" });
  const description = h("input", { type: "text", name: "description", maxlength: "2000" });
  const form = h(
    "form",
    { class: "card", onsubmit: async (event) => {
      event.preventDefault();
      const data = new FormData();
      if (description.value) data.set("description", description.value);
      try {
        await api(`/projects/${project.id}/export`, { method: "POST", form: data });
        notify("Export scheduled.");
        watch();
      } catch (error) {
        state.append(errorBox(error));
      }
    } },
    field("Description in the archive (optional)", description, "Replaces the project's description in the exported archive only."),
    h("button", { type: "submit" }, "Schedule export"),
  );
  show(section, h("h2", { id: "export-heading" }, "Export"), state, form);
  const watch = () => poll(section, async () => {
    const current = await get(`/projects/${project.id}/export`);
    const parts = [h("p", {}, "Status: ", statusBadge(current.export_status))];
    const progress = current.export_progress;
    if (progress) parts.push(bar("Records exported", progress.records_exported, progress.records_total));
    if (current._links) {
      parts.push(h("p", {}, h("button", { type: "button", onclick: () => save(`/projects/${project.id}/export/download`, `${project.path}_export.tar.gz`) }, "Download export")));
    }
    show(state, parts);
    return ["queued", "started", "regeneration_in_progress"].includes(current.export_status);
  });
  watch();
}

async function save(path, name) {
  try {
    const saved = await download(path, name);
    notify(`Downloaded ${saved.name} (${bytes(saved.size)}).`);
  } catch (error) {
    notify(error.message, "error");
  }
}

function relationsPanel(section, project) {
  const state = h("div", { class: "panel" });
  const batchedBox = checkbox("In batches", "batched", true);
  const form = h(
    "form",
    { class: "card", onsubmit: async (event) => {
      event.preventDefault();
      const data = new FormData();
      data.set("batched", batchedBox.querySelector("input").checked ? "true" : "false");
      try {
        await api(`/projects/${project.id}/export_relations`, { method: "POST", form: data });
        notify("Relations export started.");
        watch(true);
      } catch (error) {
        state.append(errorBox(error));
      }
    } },
    batchedBox,
    h("button", { type: "submit" }, "Start relations export"),
  );
  show(section, h("h2", { id: "relations-heading" }, "Relations export"), state, form);
  const watch = (started = false) => poll(section, async () => {
    let entries;
    try {
      entries = await get(`/projects/${project.id}/export_relations/status`);
    } catch (error) {
      if (error.status === 404) {
        show(state, h("p", {}, "No relations export yet."));
        return false;
      }
      throw error;
    }
    const base = `/projects/${project.id}/export_relations/download?relation=`;
    const rows = entries.map((entry) => {
      const status = RELATION_STATUS[entry.status] ?? String(entry.status);
      const downloads = [];
      if (entry.status === 1 && entry.batched) {
        for (const batch of entry.batches || []) {
          downloads.push(h("button", { type: "button", onclick: () => save(`${base}${encodeURIComponent(entry.relation)}&batched=true&batch_number=${batch.batch_number}`, `${entry.relation}_${batch.batch_number}.ndjson.gz`) }, `Batch ${batch.batch_number}`));
        }
      } else if (entry.status === 1) {
        downloads.push(h("button", { type: "button", onclick: () => save(`${base}${encodeURIComponent(entry.relation)}`, `${entry.relation}.gz`) }, "Download"));
      }
      return [
        entry.relation,
        statusBadge(status),
        entry.batched ? String(entry.batches_count) : "–",
        `${entry.exported_objects_count ?? 0} / ${entry.total_objects_count ?? 0}`,
        entry.error || "",
        h("span", { class: "downloads" }, downloads),
      ];
    });
    if (!entries.length) {
      show(state, h("p", {}, started ? "Starting…" : "No relations export yet."));
      return started;
    }
    show(state, table("Relations", ["Relation", "Status", "Batches", "Objects", "Error", "Download"], rows));
    return entries.some((entry) => entry.status === 0);
  });
  watch();
}

function relationImportPanel(section, project) {
  const state = h("div", { class: "panel" });
  const relation = h("select", { name: "relation" }, IMPORTABLE_RELATIONS.map((name) => h("option", { value: name }, name)));
  const file = h("input", { type: "file", name: "file", accept: ".tar.gz,.tgz,application/gzip", required: true });
  const form = h(
    "form",
    { class: "card", onsubmit: async (event) => {
      event.preventDefault();
      const data = new FormData();
      data.set("path", project.path_with_namespace);
      data.set("relation", relation.value);
      data.set("file", file.files[0]);
      try {
        await api("/projects/import-relation", { method: "POST", form: data });
        notify(`Importing ${relation.value}.`);
        watch();
      } catch (error) {
        state.append(errorBox(error));
      }
    } },
    field("Relation", relation),
    field("Export archive (.tar.gz)", file),
    h("button", { type: "submit" }, "Import relation"),
  );
  show(section, h("h2", { id: "relation-import-heading" }, "Import one relation"), state, form);
  const watch = () => poll(section, async () => {
    const imports = await get(`/projects/${project.id}/relation-imports`);
    show(state, imports.length
      ? table("Relation imports", ["Relation", "Status", "Imported", "Skipped", "Error", "When"], imports.map((job) => [
        job.relation, statusBadge(job.status), String(job.imported_objects_count), String(job.skipped_objects_count), job.error || "", when(job.created_at),
      ]))
      : h("p", {}, "No relation imported yet."));
    return imports.some((job) => ["created", "started"].includes(job.status));
  });
  watch();
}

function schedulePanel(section, project) {
  const state = h("div", { class: "panel" });
  show(section, h("h2", { id: "schedule-heading" }, "Export schedule"), state);
  const keep = h("input", { type: "number", name: "keep", min: "1", max: "100", value: "3" });
  const relations = checkbox("Relations export instead of a full export", "relations");
  const batched = checkbox("In batches (relations export)", "batched");
  const form = h(
    "form",
    { class: "card", onsubmit: async (event) => {
      event.preventDefault();
      const data = new FormData();
      data.set("keep", keep.value);
      data.set("relations", relations.querySelector("input").checked ? "true" : "false");
      data.set("batched", batched.querySelector("input").checked ? "true" : "false");
      try {
        await api(`/projects/${project.id}/export_schedule`, { method: "PUT", form: data });
        notify("Export schedule saved.");
        load();
      } catch (error) {
        state.append(errorBox(error));
      }
    } },
    field("Archives kept", keep),
    relations,
    batched,
    h("button", { type: "submit" }, "Save schedule"),
  );
  const load = async () => {
    let schedule = null;
    try {
      schedule = await get(`/projects/${project.id}/export_schedule`);
    } catch (error) {
      if (error.status !== 404) return show(state, errorBox(error), form);
    }
    if (!schedule) return show(state, h("p", {}, "Not scheduled: this project is not exported on the schedule."), form);
    keep.value = schedule.keep;
    relations.querySelector("input").checked = schedule.export_type !== "full";
    batched.querySelector("input").checked = Boolean(schedule.batched);
    const archives = schedule.archives.map((archive) => [
      archive.file_name || archive.id,
      when(archive.finished_at),
      h("button", { type: "button", onclick: () => save(`/projects/${project.id}/export_schedule/archives/${encodeURIComponent(archive.id)}/download`, archive.file_name) }, "Download"),
    ]);
    show(
      state,
      h("p", {}, `Scheduled ${schedule.export_type === "full" ? "full exports" : "relations exports"}, keeping ${schedule.keep}. Last run: ${when(schedule.last_scheduled_at)}.`),
      archives.length ? table("Scheduled archives", ["Archive", "Finished", "Download"], archives) : h("p", {}, "No scheduled archive yet."),
      form,
      h("button", { type: "button", class: "secondary", onclick: async () => {
        await api(`/projects/${project.id}/export_schedule`, { method: "DELETE" });
        notify("Export schedule removed.");
        load();
      } }, "Stop scheduling"),
    );
  };
  load();
}

function deletion(project) {
  const confirmation = h("input", { type: "text", name: "confirm", autocomplete: "off", spellcheck: "false" });
  const button = h("button", { type: "submit", class: "danger", disabled: true }, "Delete project");
  confirmation.addEventListener("input", () => {
    button.disabled = confirmation.value !== project.path_with_namespace;
  });
  const state = h("div");
  const form = h(
    "form",
    { class: "card danger-zone", onsubmit: async (event) => {
      event.preventDefault();
      if (confirmation.value !== project.path_with_namespace) return;
      try {
        await api(`/projects/${project.id}`, { method: "DELETE" });
        notify(`${project.path_with_namespace} deleted.`);
        location.hash = "#/projects";
      } catch (error) {
        show(state, errorBox(error));
      }
    } },
    field(`Type ${project.path_with_namespace} to confirm`, confirmation, "Deletes the project with everything it holds: records, files and exports."),
    button,
    state,
  );
  return h("section", { "aria-labelledby": "delete-heading" }, h("h2", { id: "delete-heading" }, "Delete"), form);
}
