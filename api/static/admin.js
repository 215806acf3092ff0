// The admin page: collections and their stats, uploads and pasted documents (each an
// indexing task polled until it ends), and deleting a document after a confirmation.
import { CollectionPicker, api, bindKeyField, clearAlert, el, showAlert } from "./common.js";

const $ = (id) => document.getElementById(id);
const alertRegion = $("alert");
const statusLine = $("status");
const picker = new CollectionPicker($("collection-select"), $("collection-input"));
const POLL_MS = 400;

const path = (collection) => `/v1/collections/${encodeURIComponent(collection)}`;

/** Run an action: clear the alert, show any error in it, disable `button` meanwhile. */
async function act(button, action) {
  clearAlert(alertRegion);
  if (button) button.disabled = true;
  try {
    await action();
  } catch (error) {
    showAlert(alertRegion, error);
  } finally {
    if (button) button.disabled = false;
  }
}

function say(text) {
  statusLine.textContent = text;
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
  list.replaceChildren(...Object.entries(stats).map(([name, value]) =>
    el("div", { "data-stat": name },
      el("dt", { text: name.replaceAll("_", " ") }),
      el("dd", { testid: `stat-${name}`, text: String(value) }))));
}

async function start() {
  await picker.refresh();
  await act(null, refreshStats);
}

bindKeyField($("api-key"), start);
$("collection-select").addEventListener("change", () => act(null, refreshStats));
$("collection-input").addEventListener("change", () => act(null, refreshStats));
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
    await refreshStats();
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
  await picker.refresh();
  if (picker.value === collection) {
    try {
      await refreshStats();
    } catch (error) {
      showAlert(alertRegion, error);
    }
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
    const { task_id: taskId } = await api("POST", `${path(collection)}/documents:upload`, form);
    const names = files.map((f) => f.name).join(", ");
    say(`Upload accepted: indexing ${names} into ${collection}.`);
    $("upload-form").reset();
    follow(taskId, `Upload: ${names}`, collection);
  });
});

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

// -- delete, in two steps -------------------------------------------------

let pendingDelete = null; // {collection, id} while the confirmation is shown

$("delete-form").addEventListener("submit", (event) => {
  event.preventDefault();
  clearAlert(alertRegion);
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
      const answer = await api("DELETE",
        `${path(target.collection)}/documents/${encodeURIComponent(target.id)}`);
      say(`Deleted ${answer.deleted.join(", ")} from ${target.collection}.`);
      $("delete-id").value = "";
      await refreshStats();
    } finally {
      closeConfirm();
    }
  });
});

start();
