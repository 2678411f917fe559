// Builds the page from data without ever parsing it as HTML: names, paths
// and error messages come from archives and other instances.

/**
 * An element: `h("a", { href: "#/x" }, "text", child)`. Attributes starting
 * with `on` are listeners; `false`, `null` and `undefined` ones are left out.
 */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on")) {
      element.addEventListener(name.slice(2), value);
    } else if (value === true) {
      element.setAttribute(name, "");
    } else {
      element.setAttribute(name, String(value));
    }
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/** A labelled field: the label, the control, and a hint if any. */
export function field(label, control, hint) {
  const id = control.id || uniqueId("field");
  control.id = id;
  const hintElement = hint ? h("p", { class: "hint", id: `${id}-hint` }, hint) : null;
  if (hintElement) control.setAttribute("aria-describedby", hintElement.id);
  const wrapper = h("div", { class: "field" }, h("label", { for: id }, label), control, hintElement);
  return wrapper;
}

/** A checkbox with its label after it. */
export function checkbox(label, name, checked = false) {
  const id = uniqueId(name);
  return h(
    "div",
    { class: "field check" },
    h("input", { type: "checkbox", id, name, checked }),
    h("label", { for: id }, label),
  );
}

let counter = 0;
export function uniqueId(prefix) {
  counter += 1;
  return `${prefix}-${counter}`;
}

/** A labelled progress bar: `value` of `max`, with the figures as text. */
export function bar(label, value, max, text) {
  const known = Number.isFinite(max) && max > 0;
  const progress = h("progress", { "aria-label": label, max: known ? max : null, value: known ? Math.min(value, max) : null });
  return h("div", { class: "bar" }, h("span", { class: "bar-label" }, label), progress, h("span", { class: "bar-text" }, text ?? (known ? `${value} / ${max}` : String(value))));
}

/** A table in a wrapper that scrolls sideways on a narrow screen. */
export function table(caption, headings, rows) {
  return h(
    "div",
    { class: "table-wrap", tabindex: "0", role: "region", "aria-label": caption },
    h(
      "table",
      {},
      h("caption", {}, caption),
      h("thead", {}, h("tr", {}, headings.map((heading) => h("th", { scope: "col" }, heading)))),
      h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((cell) => h("td", {}, cell))))),
    ),
  );
}

/** Replaces what `element` holds. */
export function show(element, ...children) {
  element.replaceChildren(...children.flat(Infinity).filter((child) => child !== null && child !== undefined));
}

/** A message to everyone reading, screen readers included. */
let noticeTimer = null;
export function notify(text, kind = "info") {
  const notice = document.getElementById("notice");
  notice.className = `notice ${kind}`;
  notice.textContent = text;
  // Said, then gone: a notice never stays to describe a later view.
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => {
    notice.textContent = "";
  }, 8000);
}

/** An error shown where it happened, announced. */
export function errorBox(error) {
  return h("p", { class: "error", role: "alert" }, error instanceof Error ? error.message : String(error));
}

/** A date as the reader's locale writes it. */
export function when(text) {
  if (!text) return "–";
  const date = new Date(text);
  return Number.isNaN(date.getTime()) ? text : date.toLocaleString();
}

/** Bytes, for people. */
export function bytes(count) {
  if (count === null || count === undefined) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = count;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

/**
 * Calls `load` every `ms` while it answers true and the view is still the
 * one shown; one call at a time. A view is built before it is shown: polling
 * waits for `root` to be in the page, and stops once it left it.
 */
export function poll(root, load, ms = 1000) {
  let stopped = false;
  let shown = false;
  let waits = 0;
  const tick = async () => {
    if (stopped) return;
    if (!root.isConnected) {
      // Never shown within 10 s: replaced before it was.
      waits += 1;
      if (!shown && waits < 500) setTimeout(tick, 20);
      return;
    }
    shown = true;
    let again = false;
    try {
      again = await load();
    } catch (error) {
      root.append(errorBox(error));
    }
    if (again && !stopped && root.isConnected) setTimeout(tick, ms);
  };
  setTimeout(tick, 0);
  return () => {
    stopped = true;
  };
}
