// The admin page: collections and their stats, uploads (each file's result shown) and
// pasted documents (each an indexing task polled until it ends), the document browser
// (documents.js), and deleting a document by id after a confirmation.
import { CollectionPicker, api, bindKeyField, clearAlert, el, showAlert } from "./common.js";
import { DocumentBrowser, path } from "./documents.js";

const $ = (id) => document.getElementById(id);
const alertRegion = $("alert");
const statusLine = $("status");
const picker = new CollectionPicker($("collection-select"), $("collection-input"));
const POLL_MS = 400;

// Where an action reports: the page's alert and status lines at the top, or the pair
// inside the section it was started from, so that its outcome is in view.
const TOP = { alert: alertRegion, status: statusLine };
const LIST = { alert: $("documents-alert"), status: $("documents-status") };
const BY_ID = { alert: $("delete-alert"), status: $("delete-status") };
const UPLOAD = { alert: $("upload-alert"), status: $("upload-status") };

/**
 * Run an action: clear every alert and status line (an old success must not stand
 * beside a new error), show any error in `where.alert`, disable `button` meanwhile.
 */
async function act(button, action, where = TOP) {
  for (const place of [TOP, LIST, BY_ID, UPLOAD]) {
    clearAlert(place.alert);
    place.status.textContent = "";
  }
  if (button) button.disabled = true;
  try {
    await action();
  } catch (error) {
    showAlert(where.alert, error);
  } finally {
    if (button) button.disabled = false;
  }
}

function say(text, where = TOP) {
  where.status.textContent = text;
}

// -- collection and stats -------------------------------------------------

async function refreshStats() {
  const collection = picker.value;
  const list = $("stats");
  if (!collection) {
    list.replaceChildren();
    return;
  }
  const stats = await api("GET", `${path(collection)}/stats`);
  browser.setTotal(stats.documents);
  list.replaceChildren(...Object.entries(stats).map(([name, value]) =>
    el("div", { "data-stat": name },
      el("dt", { text: name.replaceAll("_", " ") }),
      el("dd", { testid: `stat-${name}`, text: String(value) }))));
}

/** Stats and the document list of the chosen collection (the list from its first page). */
async function refreshCollection() {
  await refreshStats();
  await browser.load("");
}

/** After a change to `collection`: the chooser's counts, and its stats and list if shown. */
async function changed(collection) {
  await picker.refresh();
  if (picker.value === collection) {
    await refreshStats();
    await browser.reload();
  }
}

const browser = new DocumentBrowser({ picker, act, say, where: LIST, changed });

async function start() {
  await picker.refresh();
  await act(null, refreshCollection);
}

bindKeyField($("api-key"), start);
$("collection-select").addEventListener("change", () => act(null, refreshCollection));
$("collection-input").addEventListener("change", () => act(null, refreshCollection));
$("stats-refresh").addEventListener("click", (event) => act(event.currentTarget, refreshStats));

$("create-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const button = event.submitter;
  act(button, async () => {
    const name = $("new-collection").value.trim();
    const created = await api("POST", "/v1/collections", { name });
    say(`Collection ${created.name} created.`);
    $("new-collection").value = "";
    await picker.refresh(created.name);
    await refreshCollection();
  });
});

// -- indexing tasks -------------------------------------------------------

/** Add a task card and poll GET /v1/tasks/{id} until the task is done or failed. */
async function follow(taskId, label, collection) {
  $("no-tasks").hidden = true;
  const card = el("li", { class: "task", testid: "task", "data-task-id": taskId });
  $("tasks").prepend(card);
  for (;;) {
    let task;
    try {
      task = await api("GET", `/v1/tasks/${encodeURIComponent(taskId)}`);
    } catch (error) {
      showAlert(alertRegion, error);
      card.replaceChildren(el("p", { text: `${label}: could not read task ${taskId}` }));
      return;
    }
    renderTask(card, task, label);
    if (task.state === "done" || task.state === "failed") break;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
  // The chooser shows document counts, and the stats may be of this collection.
  try {
    await changed(collection);
  } catch (error) {
    showAlert(alertRegion, error);
  } finally {
    // The counts and the list now show what the task did (tests wait for this).
    card.dataset.settled = "true";
  }
}

function renderTask(card, task, label) {
  card.dataset.state = task.state;
  const total = Math.max(task.total, task.processed);
  const progress = el("progress", { max: String(total || 1), value: String(task.processed), "aria-label": `${label} progress` });
  const failures = Object.entries(task.failed).map(([docId, why]) =>
    el("li", { testid: "task-error" }, el("code", { text: docId }), `: ${why}`));
  const errors = task.errors.map((line) => el("li", { testid: "task-error", text: line }));
  const parts = [
    el("div", { class: "task-head" },
      el("strong", { text: label }),
      el("span", { class: `state state-${task.state}`, testid: "task-state", text: task.state })),
    el("div", { class: "task-progress" },
      progress,
      el("span", { testid: "task-progress", text: `${task.processed}/${task.total} processed` })),
    el("p", { class: "task-counts", testid: "task-counts",
      text: `indexed ${task.indexed} · unchanged ${task.unchanged} · failed ${failures.length}` +
        (errors.length ? ` · ${errors.length} file error${errors.length === 1 ? "" : "s"}` : "") }),
  ];
  if (failures.length || errors.length) {
    parts.push(el("ul", { class: "task-errors", "aria-label": "errors" }, failures, errors));
  }
  parts.push(el("p", { class: "hint", text: `task ${task.id} in ${task.collection}` }));
  card.replaceChildren(...parts);
}

$("upload-form").addEventListener("submit", (event) => {
  event.preventDefault();
  act(event.submitter, async () => {
    const files = [...$("files").files];
    if (!files.length) throw new Error("Choose at least one file to upload.");
    const collection = picker.value;
    const form = new FormData();
    for (const file of files) form.append("file", file, file.name);
    const answer = await api("POST", `${path(collection)}/documents:upload`, form);
    showFiles(answer.files);
    const accepted = answer.files.filter((f) => f.state === "accepted");
    const documents = accepted.reduce((sum, f) => sum + f.documents, 0);
    say(`Upload: ${accepted.length} of ${answer.files.length} file${answer.files.length === 1 ? "" : "s"} ` +
      `accepted, ${documents} document${documents === 1 ? "" : "s"} to index into ${collection}.`, UPLOAD);
    $("upload-form").reset();
    follow(answer.task_id, `Upload: ${answer.files.map((f) => f.name).join(", ")}`, collection);
  }, UPLOAD);
});

/** Each uploaded file's result, next to the upload form: accepted with N documents, or why not. */
function showFiles(files) {
  $("upload-files").replaceChildren(...files.map((file) => {
    const accepted = file.state === "accepted";
    const head = accepted
      ? `accepted, ${file.documents} document${file.documents === 1 ? "" : "s"}`
      : "refused";
    return el("li", { class: `upload-file file-${file.state}`, testid: "upload-file",
      "data-file": file.name, "data-state": file.state },
    el("code", { text: file.name }), ": ",
    el("span", { testid: "upload-file-state", text: head }),
    file.errors.length
      ? el("ul", { class: "task-errors" }, file.errors.map((line) =>
        el("li", { testid: "upload-file-error", text: line })))
      : null);
  }));
}

$("paste-form").addEventListener("submit", (event) => {
  event.preventDefault();
  act(event.submitter, async () => {
    const collection = picker.value;
    const doc = {
      id: $("doc-id").value.trim(),
      title: $("doc-title").value.trim(),
      text: $("doc-text").value,
      content_type: $("content-type").value,
    };
    const raw = $("doc-metadata").value.trim();
    if (raw) {
      let metadata;
      try {
        metadata = JSON.parse(raw);
      } catch (error) {
        throw new Error(`Metadata is not valid JSON: ${error.message}`);
      }
      if (metadata === null || typeof metadata !== "object" || Array.isArray(metadata)) {
        throw new Error('Metadata must be a JSON object, e.g. {"lang": "en"}.');
      }
      doc.metadata = metadata;
    }
    const { task_id: taskId } = await api("POST", `${path(collection)}/documents`, { documents: [doc] });
    say(`Document ${doc.id} accepted for indexing into ${collection}.`);
    $("paste-form").reset();
    follow(taskId, `Document: ${doc.id}`, collection);
  });
});

// -- delete by id, in two steps ---------------------------------------------

let pendingDelete = null; // {collection, id} while the confirmation is shown

$("delete-form").addEventListener("submit", (event) => {
  event.preventDefault();
  clearAlert(BY_ID.alert);
  const id = $("delete-id").value.trim();
  if (!id) return;
  pendingDelete = { collection: picker.value, id };
  $("confirm-text").textContent =
    `Delete document “${id}” from collection “${pendingDelete.collection}”? ` +
    "It is removed from the registry and both indexes.";
  $("confirm").hidden = false;
  $("confirm-no").focus();
});

function closeConfirm() {
  pendingDelete = null;
  $("confirm").hidden = true;
}

$("confirm-no").addEventListener("click", () => {
  closeConfirm();
  $("delete-id").focus();
});

$("confirm-yes").addEventListener("click", (event) => {
  const target = pendingDelete;
  if (!target) return;
  act(event.currentTarget, async () => {
    try {
      await browser.remove(target.collection, target.id, BY_ID);
      $("delete-id").value = "";
    } finally {
      closeConfirm();
    }
  }, BY_ID);
});

start();
