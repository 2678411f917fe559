// The console: sign in, then one view per address after the `#`. Every
// view calls the API as any client would; the server checks everything.

import { api, session } from "./api.js";
import { errorBox, field, h, notify, show } from "./dom.js";
import { importView } from "./imports.js";
import { migrationsView, migrationView } from "./migrations.js";
import { projectsView, projectView } from "./projects.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");

const routes = [
  [/^#\/projects\/(\d+)$/, (id) => projectView(Number(id))],
  [/^#\/projects(?:\?.*)?$/, () => projectsView()],
  [/^#\/import$/, () => importView()],
  [/^#\/migrations\/(\d+)$/, (id) => migrationView(Number(id))],
  [/^#\/migrations$/, () => migrationsView()],
];

let user = null;

async function route() {
  if (!session.token()) return signInView();
  if (!user) {
    try {
      user = (await api("/user")).data;
    } catch (error) {
      return signInView(error);
    }
  }
  who.textContent = `Signed in as ${user.username}`;
  nav.hidden = false;
  const hash = location.hash || "#/projects";
  for (const [pattern, view] of routes) {
    const match = pattern.exec(hash);
    if (match) {
      const content = await view(...match.slice(1)).catch((error) => h("section", {}, h("h1", {}, "Something went wrong"), errorBox(error)));
      return showView(content);
    }
  }
  showView(h("section", {}, h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/projects" }, "Back to the projects"))));
}

/** Shows a view and moves the focus to its heading, as a page load would. */
function showView(content) {
  show(main, content);
  const heading = main.querySelector("h1");
  if (heading) {
    heading.tabIndex = -1;
    heading.focus();
  }
  const title = heading ? heading.textContent : "Console";
  document.title = `${title} · Project export/import`;
}

function signInView(error) {
  user = null;
  nav.hidden = true;
  const input = h("input", { type: "password", name: "token", autocomplete: "off", required: true, spellcheck: "false" });
  const form = h(
    "form",
    { class: "card", onsubmit: signIn },
    field("Personal access token", input, "Kept in this tab only (sessionStorage) and sent to this server only, in a header."),
    h("button", { type: "submit" }, "Sign in"),
  );
  showView(h("section", { class: "narrow" }, h("h1", {}, "Sign in"), error ? errorBox(error) : null, form));

  async function signIn(event) {
    event.preventDefault();
    session.signIn(input.value.trim());
    try {
      user = (await api("/user")).data;
    } catch (failure) {
      session.signOut();
      return signInView(failure);
    }
    notify(`Signed in as ${user.username}.`);
    if (!location.hash || location.hash === "#/") location.hash = "#/projects";
    else route();
  }
}

document.getElementById("sign-out").addEventListener("click", () => {
  session.signOut();
  user = null;
  notify("Signed out.");
  location.hash = "";
  signInView();
});

// The views live after the `#`: the skip link moves the focus instead of
// changing it.
document.querySelector(".skip").addEventListener("click", (event) => {
  event.preventDefault();
  main.focus();
});

window.addEventListener("console:signed-out", () => signInView(new Error("The token was refused: sign in again.")));
window.addEventListener("hashchange", route);
route();
