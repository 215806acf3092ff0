// The search page: POST /v1/search, the hits with their provenance, a compare view of
// retrieval order against reranked order, per-stage timings and cursor paging.
import { CollectionPicker, api, bindKeyField, clearAlert, el, num, showAlert } from "./common.js";

const $ = (id) => document.getElementById(id);
const form = $("search-form");
const queryInput = $("query");
const modeSelect = $("mode");
const topKSelect = $("top-k");
const rerankBox = $("rerank");
const searchButton = $("search-button");
const alertRegion = $("alert");
const outcome = $("outcome");
const picker = new CollectionPicker($("collection-select"), $("collection-input"));

// Paging: the first request's body, and the cursor of every page seen so far
// (null for page 1), so "Previous" replays a page exactly.
const paging = { body: null, cursors: [null], index: 0, next: null };
let sequence = 0; // answers to superseded requests are dropped

// The server's reranker (GET /readyz, reranker_status): named when there is one; when
// there is none the Rerank box is off and disabled, with the reason and the fix beside it.
let rerankerStatus = null;

bindKeyField($("api-key"), () => picker.refresh());
picker.refresh();
showRerankerStatus();

async function showRerankerStatus() {
  const line = $("reranker-status");
  try {
    // Public, and answered with a body when not ready (503) too: not through api().
    const response = await fetch("/readyz", { headers: { Accept: "application/json" } });
    rerankerStatus = (await response.json()).reranker_status || null;
  } catch {
    return; // the server is not reachable: the first search says so
  }
  const s = rerankerStatus;
  if (!s) return;
  if (s.active) {
    const parts = [
      s.fingerprint && `fingerprint ${s.fingerprint}`,
      s.device,
      s.dtype,
      s.calibrated ? "calibrated" : "not calibrated",
      `blend ${s.blend_weight} (${s.blend_source})`,
    ].filter(Boolean);
    line.replaceChildren(el("strong", { text: "Reranker: " }), `${s.model} (${parts.join(", ")})`);
    line.classList.remove("unavailable");
    return;
  }
  rerankBox.checked = false;
  rerankBox.disabled = true;
  line.classList.add("unavailable");
  line.replaceChildren(
    el("strong", { text: "No reranker: " }),
    el("span", { testid: "reranker-why", text: `${s.why}. ` }),
    "Fix: ",
    el("code", { testid: "reranker-fix", text: s.fix }));
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const query = queryInput.value.trim();
  if (!query) {
    showAlert(alertRegion, "Type a query first.");
    queryInput.focus();
    return;
  }
  const body = {
    query,
    collection: picker.value || "default",
    mode: modeSelect.value,
    top_k: Number(topKSelect.value),
  };
  // Unchecked turns reranking off; checked leaves it to the server (on when it has a reranker).
  if (!rerankBox.checked) body.rerank = false;
  paging.body = body;
  paging.cursors = [null];
  paging.index = 0;
  loadPage();
});

$("next-page").addEventListener("click", () => {
  if (!paging.next) return;
  paging.cursors = paging.cursors.slice(0, paging.index + 1).concat([paging.next]);
  paging.index += 1;
  loadPage();
});

$("prev-page").addEventListener("click", () => {
  if (paging.index === 0) return;
  paging.index -= 1;
  loadPage();
});

async function loadPage() {
  const mine = ++sequence;
  const cursor = paging.cursors[paging.index];
  const { query, collection, top_k: topK } = paging.body;
  // A cursor carries mode and rerank; the query, collection and page size stay the same.
  const body = cursor ? { query, collection, top_k: topK, cursor } : paging.body;
  clearAlert(alertRegion);
  searchButton.disabled = true;
  outcome.setAttribute("aria-busy", "true");
  try {
    const answer = await api("POST", "/v1/search", body);
    if (mine !== sequence) return;
    paging.next = answer.next_cursor;
    render(answer, paging.body.rerank !== false); // later pages keep the first page's choice
  } catch (error) {
    if (mine !== sequence) return;
    showAlert(alertRegion, error);
  } finally {
    if (mine === sequence) {
      searchButton.disabled = false;
      outcome.removeAttribute("aria-busy");
    }
  }
}

function render(answer, rerankAsked) {
  outcome.hidden = false;
  renderSummary(answer, rerankAsked);
  renderHits(answer.hits);
  renderPager(answer);
  renderTimings(answer.timings_ms);
  renderCompare(answer, rerankAsked);
}

/** Why a result is not reranked, in words, or null when it is. */
function notRerankedReason(answer, rerankAsked) {
  if (answer.reranked) return null;
  if (answer.degraded.includes("rerank")) {
    const why = (answer.degraded_reasons || {}).rerank;
    return `the reranker failed or answered too late (${why || "degraded"}), so this is the retrieval order`;
  }
  if (answer.skipped && answer.skipped.rerank) return answer.skipped.rerank;
  if (!answer.hits.length) return "there was nothing to rerank";
  if (rerankerStatus && !rerankerStatus.active) return `the server has no reranker (${rerankerStatus.why})`;
  if (!rerankAsked) return "reranking was turned off for this search";
  return "the server has no reranker configured";
}

function renderSummary(answer, rerankAsked) {
  const parts = [
    `${answer.total_window} result${answer.total_window === 1 ? "" : "s"} in the window`,
    `mode ${answer.mode}`,
  ];
  if (answer.fusion) parts.push(`fusion ${answer.fusion}`);
  if (answer.reranked) {
    parts.push(`reranked (top ${answer.rerank_window}, ${answer.cached_scores} cached scores)`);
  } else {
    parts.push("not reranked");
  }
  if (answer.timings_ms.total !== undefined) parts.push(`${num(answer.timings_ms.total, 1)} ms`);
  $("summary").textContent = parts.join(" · ");

  const notices = [];
  for (const stage of answer.degraded) {
    const why = (answer.degraded_reasons || {})[stage];
    notices.push(
      el("li", { class: "notice degraded", testid: "degraded" },
        el("strong", { text: "Degraded: " }),
        `the ${stage} stage failed or ran late${why ? ` (${why})` : ""}; ` +
          "these results come without it."),
    );
  }
  for (const [stage, why] of Object.entries(answer.skipped || {})) {
    notices.push(
      el("li", { class: "notice skipped", testid: "skipped" },
        el("strong", { text: `Skipped ${stage}: ` }), why),
    );
  }
  const why = notRerankedReason(answer, rerankAsked);
  if (why) {
    notices.push(
      el("li", { class: "notice", testid: "not-reranked-notice" },
        el("strong", { text: "Not reranked: " }), why),
    );
  }
  $("notices").replaceChildren(...notices);
}

function renderHits(hits) {
  const list = $("results");
  if (!hits.length) {
    list.replaceChildren(el("li", { class: "empty", text: "No results." }));
    return;
  }
  list.replaceChildren(...hits.map(hitItem));
}

function hitItem(hit) {
  const meta = hit.metadata || {};
  const badges = ["lang", "topic"]
    .filter((name) => meta[name] !== undefined && meta[name] !== null && meta[name] !== "")
    .map((name) => el("span", { class: "badge", title: name, testid: `meta-${name}`, text: String(meta[name]) }));
  return el("li", { class: "hit", testid: "hit", "data-doc-id": hit.doc_id },
    el("div", { class: "hit-head" },
      el("span", { class: "rank", text: `${hit.rank}.` }),
      el("h3", { class: "title", testid: "hit-title", text: hit.title || hit.doc_id })),
    el("p", { class: "source", testid: "source" },
      el("code", { testid: "doc-id", text: hit.doc_id }), ...badges),
    el("p", { class: "snippet", testid: "snippet" }, safeSnippet(hit.snippet ?? "")),
    provenance(hit));
}

/**
 * The snippet as nodes. The server HTML-escapes the passage and adds only
 * <mark>; parsing it in an inert <template> and keeping nothing but text and
 * <mark> makes sure no other markup could ever reach the page.
 */
function safeSnippet(html) {
  const template = document.createElement("template");
  template.innerHTML = html;
  const out = document.createDocumentFragment();
  for (const node of template.content.childNodes) {
    if (node.nodeName === "MARK") out.append(el("mark", { text: node.textContent }));
    else out.append(document.createTextNode(node.textContent));
  }
  return out;
}

function provenance(hit) {
  const leg = (value) => (value ? `#${value.rank} · ${num(value.score)}` : "—");
  const rows = [
    ["BM25", leg(hit.bm25), "prov-bm25"],
    ["Vector", leg(hit.vector), "prov-vector"],
    ["Fused", leg(hit.fused), "prov-fused"],
    ["Rerank", hit.rerank ? `${num(hit.rerank.score)} (logit ${num(hit.rerank.logit, 2)})` : "—", "prov-rerank"],
  ];
  return el("dl", { class: "provenance", testid: "provenance" },
    rows.map(([name, value, testid]) => el("div", {},
      el("dt", { text: name }), el("dd", { testid, text: value }))));
}

function renderPager(answer) {
  $("prev-page").disabled = paging.index === 0;
  $("next-page").disabled = !answer.next_cursor;
  $("page-label").textContent = `Page ${answer.page}`;
}

function renderTimings(timings) {
  const total = timings.total || Math.max(0, ...Object.values(timings)) || 1;
  const rows = Object.entries(timings).map(([stage, ms]) =>
    el("tr", { "data-stage": stage },
      el("th", { scope: "row", text: stage.replaceAll("_", " ") }),
      el("td", { class: "ms", text: ms > 0 && ms < 0.1 ? "<0.1" : num(ms, 1) }),
      el("td", { class: "bar-cell" }, bar(ms / total, stage === "total" ? "bar total" : "bar"))));
  $("timings").tBodies[0].replaceChildren(...rows);
}

/** A horizontal bar filled to `share` (0..1). */
function bar(share, className = "bar") {
  const width = Math.max(0, Math.min(1, share)) * 100;
  return el("div", { class: className, "aria-hidden": "true" },
    el("div", { class: "fill", testid: "score-bar", style: `width: ${width.toFixed(1)}%` }));
}

/** Where retrieval put a hit: the fused rank, or the rank of the one leg that ran. */
function retrieval(hit) {
  const stage = hit.fused || hit.bm25 || hit.vector;
  return stage ? { rank: stage.rank, score: stage.score } : { rank: hit.rank, score: hit.score };
}

/** ↑n, ↓n or = for a move from rank `from` to rank `to`. */
function movement(from, to) {
  const delta = from - to;
  if (delta > 0) return el("span", { class: "move up", testid: "move", title: `moved up ${delta}`, text: `↑${delta}` });
  if (delta < 0) return el("span", { class: "move down", testid: "move", title: `moved down ${-delta}`, text: `↓${-delta}` });
  return el("span", { class: "move same", testid: "move", title: "not moved", text: "=" });
}

function compareRow(hit, rank, score, max, move) {
  return el("li", { class: "compare-row", testid: "compare-row", "data-doc-id": hit.doc_id },
    el("span", { class: "rank", text: `#${rank}` }),
    el("span", { class: "who" },
      el("span", { class: "title", text: hit.title || hit.doc_id }),
      el("code", { text: hit.doc_id })),
    bar(max > 0 ? score / max : 0),
    el("span", { class: "score", text: num(score) }),
    move);
}

function renderCompare(answer, rerankAsked) {
  const hits = answer.hits;
  const retrievalList = document.querySelector('[data-testid="retrieval-order"] ol');
  const rerankedList = document.querySelector('[data-testid="reranked-order"] ol');
  const notice = document.querySelector('[data-testid="not-reranked"]');

  const byRetrieval = [...hits].sort((a, b) => retrieval(a).rank - retrieval(b).rank);
  const maxRetrieval = Math.max(0, ...hits.map((h) => retrieval(h).score));
  retrievalList.replaceChildren(...byRetrieval.map((hit) => {
    const r = retrieval(hit);
    return compareRow(hit, r.rank, r.score, maxRetrieval, movement(r.rank, hit.rank));
  }));

  const why = notRerankedReason(answer, rerankAsked);
  notice.hidden = !why;
  notice.textContent = why ? `Not reranked: ${why}.` : "";
  if (why) {
    rerankedList.replaceChildren();
    return;
  }
  const finalScore = (hit) => (hit.rerank && hit.rerank.score !== null ? hit.rerank.score : hit.score);
  const maxFinal = Math.max(0, ...hits.map(finalScore));
  rerankedList.replaceChildren(...hits.map((hit) =>
    compareRow(hit, hit.rank, finalScore(hit), maxFinal, movement(retrieval(hit).rank, hit.rank))));
}
