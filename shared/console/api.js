// The console's only way to the server: the same /api/v4 routes any client
// calls, with the personal access token in a header. The token lives in
// sessionStorage (gone with the tab) and never in a URL.

const TOKEN_KEY = "console.token";
const API = "/api/v4";

export const session = {
  token: () => sessionStorage.getItem(TOKEN_KEY),
  signIn: (token) => sessionStorage.setItem(TOKEN_KEY, token),
  signOut: () => sessionStorage.removeItem(TOKEN_KEY),
};

/** An answer other than 2xx: its status and GitLab's message. */
export class ApiError extends Error {
  constructor(status, body) {
    super(messageOf(status, body));
    this.status = status;
    this.body = body;
  }
}

function messageOf(status, body) {
  if (body && typeof body === "object") {
    const text = body.message ?? body.error;
    if (typeof text === "string") return `${status}: ${text}`;
    if (text) return `${status}: ${JSON.stringify(text)}`;
  }
  return `${status}: the server answered without a message`;
}

// `Authorization: Bearer`, which GitLab takes as PRIVATE-TOKEN, because a
// browser drops it when a download redirects to another origin (a presigned
// S3 URL): the token never leaves this server.
function headers(extra = {}) {
  const token = session.token();
  return token ? { Authorization: `Bearer ${token}`, ...extra } : extra;
}

async function failure(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not JSON: the status says it.
  }
  if (response.status === 401) {
    session.signOut();
    window.dispatchEvent(new Event("console:signed-out"));
  }
  return new ApiError(response.status, body);
}

/**
 * Calls `path` under /api/v4. `form` (a FormData) or `json` is the body.
 * Returns { data, headers }; throws ApiError for any answer but 2xx.
 */
export async function api(path, { method = "GET", form, json } = {}) {
  const init = { method, headers: headers(), credentials: "omit", cache: "no-store" };
  if (form) {
    init.body = form;
  } else if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  }
  const response = await fetch(API + path, init);
  if (!response.ok) throw await failure(response);
  const text = await response.text();
  return { data: text ? JSON.parse(text) : null, headers: response.headers };
}

/** GETs `path`; the decoded answer. */
export async function get(path) {
  return (await api(path)).data;
}

/**
 * Downloads `path` (an archive or a relation's file) and hands it to the
 * browser under the name the server gives it. The server streams it, or
 * redirects to a short-lived signed URL, which fetch follows.
 */
export async function download(path, fallbackName) {
  const response = await fetch(API + path, { headers: headers(), credentials: "omit", cache: "no-store" });
  if (!response.ok) throw await failure(response);
  const blob = await response.blob();
  const name = fileName(response.headers.get("Content-Disposition")) || fallbackName;
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  link.hidden = true;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  return { name, size: blob.size };
}

function fileName(disposition) {
  if (!disposition) return null;
  const encoded = /filename\*=UTF-8''([^;]+)/i.exec(disposition);
  if (encoded) return decodeURIComponent(encoded[1]);
  const plain = /filename="?([^";]+)"?/i.exec(disposition);
  return plain ? plain[1] : null;
}

/**
 * PUTs `file` to a presigned upload URL (the server's, or S3's), reporting
 * the bytes sent: fetch cannot tell upload progress, XMLHttpRequest can.
 */
export function upload(url, file, onProgress) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("PUT", url);
    request.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded, event.total);
    });
    request.addEventListener("load", () => {
      if (request.status >= 200 && request.status < 300) {
        onProgress(file.size, file.size);
        resolve();
      } else {
        let body = null;
        try {
          body = JSON.parse(request.responseText);
        } catch {
          // S3 answers XML: the status says it.
        }
        reject(new ApiError(request.status, body));
      }
    });
    request.addEventListener("error", () => reject(new Error("the upload was cut off")));
    request.send(file);
  });
}
