// The admin page's document browser: the collection's documents a page at a time,
// filtered by id prefix, state and metadata (in the registry's query, so pages stay
// full), deleting a document from its row, and a document's detail: its fields and
// its chunks, each marked with whether the keyword and the vector index hold it.
import { api, el } from "./common.js";

const $ = (id) => document.getElementById(id);
const PAGE_SIZE = 20;
const INDEXES = ["keyword", "vector"];

export const path = (collection) => `/v1/collections/${encodeURIComponent(collection)}`;

/**
 * The filter form's values as query parameters: `prefix`, `status` and one
 * `meta.KEY` per `key=value` of the metadata box (comma-separated; a repeated key
 * means any of its values, as the API reads it).
 */
function filterQuery() {
  const query = new URLSearchParams();
  const prefix = $("filter-prefix").value;
  if (prefix) query.set("prefix", prefix);
  const status = $("filter-status").value;
  if (status) query.set("status", status);
  for (const part of $("filter-meta").value.split(",")) {
    if (!part.trim()) continue;
    const at = part.indexOf("=");
    if (at < 1) throw new Error(`Metadata filter “${part.trim()}”: write key=value, e.g. lang=en.`);
    query.append(`meta.${part.slice(0, at).trim()}`, part.slice(at + 1).trim());
  }
  return query;
}

export class DocumentBrowser {
  /**
   * `picker`: the collection chooser; `act(button, action, where)` runs an action
   * with its errors shown in `where`; `where`: the list's alert and status pair;
   * `say(text, where)`; `changed(collection)`: bring the other counts up to date.
   */
  constructor({ picker, act, say, where, changed }) {
    Object.assign(this, { picker, act, say, where, changed });
    // The page shown: its collection, the id it starts after ("" for the first page),
    // its number, where the next one starts, and the filter it was read with.
    this.listing = { collection: "", after: "", number: 1, next: null, query: "" };
    this.total = null; // documents in the collection, from its stats
    this.open = null; // {collection, id} of the document shown in the detail panel
    $("documents-refresh").addEventListener("click", (event) =>
      act(event.currentTarget, () => this.load(this.listing.after), where));
    $("documents-first").addEventListener("click", (event) =>
      act(event.currentTarget, () => this.load(""), where));
    $("documents-next").addEventListener("click", (event) => act(event.currentTarget, async () => {
      const number = this.listing.number + 1;
      await this.load(this.listing.next);
      this.listing.number = number;
      $("documents-page").textContent = `page ${number}`;
    }, where));
    $("documents-filter").addEventListener("submit", (event) => {
      event.preventDefault();
      act(event.submitter, () => this.load(""), where);
    });
    $("filter-clear").addEventListener("click", (event) => {
      $("documents-filter").reset();
      act(event.currentTarget, () => this.load(""), where);
    });
    $("detail-close").addEventListener("click", () => this.closeDetail());
  }

  /** The collection's document count (from its stats), shown beside the list. */
  setTotal(total) {
    this.total = total;
    this.summarize();
  }

  /** The page again from where it starts (after a task or a delete). */
  reload() {
    const same = this.listing.collection === this.picker.value;
    return this.load(same ? this.listing.after : "");
  }

  async load(after) {
    const collection = this.picker.value;
    if (!collection) return;
    const query = filterQuery();
    const filtered = [...query.keys()].length > 0;
    const key = query.toString();
    if (collection !== this.listing.collection || after === "" || key !== this.listing.query) {
      this.listing.number = 1;
      if (key !== this.listing.query) after = "";
    }
    query.set("limit", String(PAGE_SIZE));
    if (after) query.set("after", after);
    const page = await api("GET", `${path(collection)}/documents?${query}`);
    if (!page.documents.length && after) return this.load(""); // its last row was deleted
    Object.assign(this.listing, { collection, after, next: page.next_after, query: key });
    this.listing.shown = page.documents.length;
    this.listing.filtered = filtered;
    $("documents-list").replaceChildren(...page.documents.map((doc) => this.row(collection, doc)));
    const none = $("no-documents");
    none.hidden = page.documents.length > 0 || after !== "";
    none.textContent = filtered ? "No document matches the filter." : "No documents in this collection.";
    $("documents-first").disabled = after === "";
    $("documents-next").disabled = page.next_after === null;
    $("documents-page").textContent = `page ${this.listing.number}`;
    this.summarize();
  }

  summarize() {
    const { shown, filtered } = this.listing;
    if (shown === undefined || this.total === null) return;
    const which = filtered ? "matching the filter " : "";
    $("documents-count").textContent =
      `${shown} document${shown === 1 ? "" : "s"} ${which}on this page · ` +
      `${this.total} in the collection`;
  }

  row(collection, doc) {
    const state = el("td", { class: `state-${doc.status}`, testid: "row-state" },
      doc.status, doc.error ? el("span", { class: "why", text: doc.error }) : null);
    const actions = el("td", { class: "actions" });
    const remove = el("button", { type: "button", class: "danger", testid: "row-delete",
      "aria-label": `Delete ${doc.id}`, text: "Delete…" });
    actions.append(remove);
    remove.addEventListener("click", () => this.confirmInRow(collection, doc.id, actions, remove));
    const opener = el("button", { type: "button", class: "link", testid: "row-open",
      "aria-label": `Open ${doc.id}`, text: doc.id });
    const row = el("tr", { testid: "document-row", "data-doc-id": doc.id, class: "openable" },
      el("td", {}, opener),
      el("td", { text: doc.title }),
      state,
      el("td", { text: String(doc.chunks) }),
      actions);
    // The whole row opens the document; its own buttons keep their meaning.
    row.addEventListener("click", (event) => {
      if (event.target.closest("button") && event.target !== opener) return;
      this.act(null, () => this.showDetail(collection, doc.id), this.where);
    });
    return row;
  }

  /** Ask in the row itself; the answer (or the error) shows just above the list. */
  confirmInRow(collection, id, cell, remove) {
    const yes = el("button", { type: "button", class: "danger", testid: "row-confirm-yes",
      text: "Yes, delete it" });
    const no = el("button", { type: "button", testid: "row-confirm-no", text: "Cancel" });
    cell.replaceChildren(el("span", { text: "Delete?" }), yes, no);
    no.addEventListener("click", () => {
      cell.replaceChildren(remove);
      remove.focus();
    });
    yes.addEventListener("click", () => this.act(yes, async () => {
      try {
        await this.remove(collection, id, this.where);
      } finally {
        cell.replaceChildren(remove);
      }
    }, this.where));
    no.focus();
  }

  /** Delete one document, say so in `where`, then bring every count on the page up to date. */
  async remove(collection, id, where) {
    const answer = await api("DELETE", `${path(collection)}/documents/${encodeURIComponent(id)}`);
    this.say(`Deleted ${answer.deleted.join(", ")} from ${collection}.`, where);
    where.status.scrollIntoView({ block: "nearest" });
    if (this.open && this.open.collection === collection && this.open.id === id) this.closeDetail();
    await this.changed(collection);
  }

  // -- one document: its fields and its chunks --------------------------------

  async showDetail(collection, id) {
    const base = path(collection);
    const [doc, chunks] = await Promise.all([
      api("GET", `${base}/documents/${encodeURIComponent(id)}`),
      api("GET", `${base}/chunks?${new URLSearchParams({ doc_id: id })}`),
    ]);
    this.open = { collection, id };
    const panel = $("document-detail");
    $("detail-heading").textContent = doc.title || doc.id;
    const fields = [
      ["id", doc.id], ["state", doc.status], ["version", String(doc.version)],
      ["content type", doc.content_type], ["updated", doc.updated_at || ""],
    ];
    if (doc.error) fields.push(["error", doc.error]);
    if (chunks.error) fields.push(["chunking", chunks.error]);
    const metadata = Object.entries(doc.metadata);
    $("detail-fields").replaceChildren(...fields.map(([name, value]) =>
      el("div", {}, el("dt", { text: name }), el("dd", { testid: `detail-${name.replaceAll(" ", "-")}`, text: value }))),
      el("div", {}, el("dt", { text: "metadata" }), el("dd", { testid: "detail-metadata" },
        metadata.length ? metadata.map(([key, value]) =>
          el("code", { class: "meta", text: `${key}=${JSON.stringify(value)}` })) : "none")));
    $("detail-chunks").replaceChildren(...chunks.chunks.map((chunk) => chunkRow(chunk)));
    const held = INDEXES.map((name) => {
      const diff = chunks.indexes[name];
      const off = diff.missing.length + diff.stale.length;
      const extra = diff.orphans.length ? `, ${diff.orphans.length} left over` : "";
      return `${name}: ${chunks.chunks.length - off} of ${chunks.chunks.length} chunks${extra}`;
    });
    $("detail-summary").textContent = held.join(" · ");
    panel.hidden = false;
    panel.scrollIntoView({ block: "nearest" });
  }

  closeDetail() {
    this.open = null;
    $("document-detail").hidden = true;
  }
}

function chunkRow(chunk) {
  const marks = INDEXES.map((name) => {
    const held = chunk.indexes[name];
    return el("td", { class: held ? "mark held" : "mark absent", testid: `chunk-${name}`,
      "data-present": String(held), title: held ? `in the ${name} index` : `missing from the ${name} index` },
    held ? "✓" : "✗", el("span", { class: "sr-only", text: held ? " present" : " missing" }));
  });
  return el("tr", { testid: "chunk-row", "data-chunk-id": chunk.id },
    el("td", { text: String(chunk.ordinal) }),
    el("td", { text: `${chunk.start}–${chunk.end}` }),
    el("td", { text: String(chunk.tokens) }),
    el("td", { class: "preview", text: chunk.preview }),
    marks);
}
