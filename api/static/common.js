// Shared by the search and admin pages: the API key, calls to the API with its error
// shape, the collection chooser and a small element builder. No framework, no build.

const KEY_STORAGE = "sieve.apiKey";

/** An answer of the API that is not a success: `{"error": {"code", "message", "details"}}`. */
export class ApiError extends Error {
  constructor(status, code, message, details = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }

  /** One line for the alert region. */
  describe() {
    const where = this.status ? `HTTP ${this.status}, ${this.code}` : this.code;
    return `${this.message} (${where})`;
  }
}

export function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

/** Keep the key field and sessionStorage in step; `onChange` runs after each edit. */
export function bindKeyField(input, onChange) {
  input.value = apiKey();
  input.addEventListener("change", () => {
    const key = input.value.trim();
    if (key) {
      sessionStorage.setItem(KEY_STORAGE, key);
    } else {
      sessionStorage.removeItem(KEY_STORAGE);
    }
    if (onChange) onChange();
  });
}

/**
 * Call the API. `body` is sent as JSON, or as multipart when it is FormData.
 * Resolves to the parsed answer; rejects with an ApiError (status 0 when the
 * server could not be reached).
 */
export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  let payload;
  if (body instanceof FormData) {
    payload = body; // the browser sets the multipart boundary itself
  } else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body: payload });
  } catch (err) {
    throw new ApiError(0, "network_error", `Could not reach the server: ${err.message}`);
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = data && data.error;
    if (error && error.message) {
      throw new ApiError(response.status, error.code, error.message, error.details || {});
    }
    const reason = response.statusText || "request failed";
    throw new ApiError(response.status, "http_error", `${response.status} ${reason}`);
  }
  return data;
}

/**
 * Build an element. `attrs`: `text` (textContent), `class`, `testid`
 * (data-testid), `hidden`, anything else as an attribute. Children are
 * nodes or strings (always text, never parsed as HTML).
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = String(value);
    else if (name === "class") node.className = value;
    else if (name === "testid") node.dataset.testid = value;
    else if (name === "hidden") node.hidden = true;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Show an error (ApiError, Error or text) in a role="alert" region. */
export function showAlert(region, error) {
  let text;
  if (error instanceof ApiError) text = error.describe();
  else if (error instanceof Error) text = error.message;
  else text = String(error);
  region.textContent = text;
}

export function clearAlert(region) {
  region.textContent = "";
}

/**
 * The collection chooser: a <select> filled from GET /v1/collections when the
 * key may list collections (an admin key, or an open API), else a text field
 * (default "default"). Both controls are in the page; one is shown.
 */
export class CollectionPicker {
  constructor(select, input) {
    this.select = select;
    this.input = input;
  }

  get value() {
    return (this.select.hidden ? this.input.value : this.select.value).trim();
  }

  /** Reload the list; `preferred` is selected when present. Never throws. */
  async refresh(preferred) {
    const wanted = preferred || this.value || "default";
    let collections;
    try {
      collections = (await api("GET", "/v1/collections")).collections;
    } catch {
      collections = [];
    }
    if (!collections.length) {
      this.select.hidden = true;
      this.input.hidden = false;
      if (preferred) this.input.value = preferred;
      return;
    }
    const names = collections.map((c) => c.name);
    this.select.replaceChildren(
      ...collections.map((c) =>
        el("option", { value: c.name, text: `${c.name} (${c.documents} documents)` }),
      ),
    );
    if (names.includes(wanted)) this.select.value = wanted;
    else if (names.includes("default")) this.select.value = "default";
    this.input.value = this.select.value;
    this.select.hidden = false;
    this.input.hidden = true;
  }
}

/** A number for people: at most `digits` decimals, no trailing zeros. */
export function num(value, digits = 3) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  return Number(value.toFixed(digits)).toString();
}
