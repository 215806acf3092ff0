"""The ``/docs`` page: a small self-contained viewer of ``/openapi.json``.

No CDN and no build step (Sieve runs where nothing can be downloaded): plain
HTML and a few dozen lines of JavaScript that list every operation with its
parameters, request body fields and responses, schemas expanded in place.
Kept as a string so it ships inside the package without package-data rules.
"""

from __future__ import annotations

DOCS_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sieve API</title>
<style>
  body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 60rem;
         padding: 1rem 1.5rem 4rem; color: #1d2433; }
  h1 { margin-bottom: .2rem; } h2 { margin-top: 2rem; border-bottom: 1px solid #ccd;
  text-transform: capitalize; }
  details.op { border: 1px solid #d6dae3; border-radius: 6px; margin: .5rem 0; }
  details.op > summary { cursor: pointer; padding: .45rem .7rem; list-style: none; }
  details.op[open] > summary { border-bottom: 1px solid #d6dae3; background: #f6f8fb; }
  .m { display: inline-block; min-width: 4.2rem; font: 600 12px monospace; color: #fff;
       text-align: center; border-radius: 4px; padding: 2px 0; margin-right: .6rem; }
  .get { background: #2f7d4f; } .post { background: #2d5fa8; } .put { background: #9a6a14; }
  .delete { background: #a8322d; }
  .path { font-family: monospace; font-weight: 600; } .sum { color: #555; margin-left: .6rem; }
  .body { padding: .3rem 1rem 1rem; }
  table { border-collapse: collapse; width: 100%; font-size: 14px; }
  td, th { text-align: left; padding: .25rem .5rem; border-bottom: 1px solid #eef;
           vertical-align: top; }
  code, .t { font-family: monospace; font-size: 13px; } .t { color: #6b3fa0; }
  .lock { color: #a8322d; font-size: 12px; margin-left: .5rem; }
  .nested { margin-left: 1rem; }
</style>
</head>
<body>
<h1>Sieve API</h1>
<p id="intro">Loading <a href="/openapi.json">/openapi.json</a>&hellip;</p>
<main id="ops"></main>
<script>
"use strict";
let doc = null;
const el = (tag, attrs = {}, ...kids) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const kid of kids) node.append(kid);
  return node;
};
const resolve = (schema) => {
  while (schema && schema.$ref) schema = doc.components.schemas[schema.$ref.split("/").pop()];
  return schema || {};
};
function typeOf(schema) {
  const raw = schema;
  schema = resolve(schema);
  if (schema.anyOf) return schema.anyOf.map(typeOf).join(" | ");
  if (schema.enum) return schema.enum.map((v) => JSON.stringify(v)).join(" | ");
  if (schema.const !== undefined) return JSON.stringify(schema.const);
  if (schema.type === "array") {
    if (schema.prefixItems) return "[" + schema.prefixItems.map(typeOf).join(", ") + "]";
    return typeOf(schema.items || {}) + "[]";
  }
  if (raw.$ref) return raw.$ref.split("/").pop();
  return schema.type || "any";
}
function limits(schema) {
  schema = resolve(schema);
  const out = [];
  const keys = ["minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems", "pattern"];
  for (const k of keys)
    if (schema[k] !== undefined) out.push(k + " " + schema[k]);
  if (schema.default !== undefined) out.push("default " + JSON.stringify(schema.default));
  return out.join(", ");
}
function fields(schema, depth = 0) {
  schema = resolve(schema);
  const props = schema.properties || {};
  if (!Object.keys(props).length || depth > 3) return el("code", {}, typeOf(schema));
  const required = new Set(schema.required || []);
  const table = el("table", {}, el("tr", {}, el("th", {}, "field"), el("th", {}, "type"),
                                   el("th", {}, "notes")));
  for (const [name, prop] of Object.entries(props)) {
    const notes = el("td", {}, (required.has(name) ? "required. " : "") + limits(prop) +
                     (prop.description ? " " + prop.description : ""));
    const inner = resolve(prop.type === "array" ? prop.items || {} : prop);
    if (inner.properties) notes.append(el("div", {class: "nested"}, fields(inner, depth + 1)));
    table.append(el("tr", {}, el("td", {}, el("code", {}, name)),
                    el("td", {class: "t"}, typeOf(prop)), notes));
  }
  return table;
}
function operation(path, method, op) {
  const head = el("summary", {}, el("span", {class: "m " + method}, method.toUpperCase()),
                  el("span", {class: "path"}, path), el("span", {class: "sum"}, op.summary || ""));
  if (op.security && op.security.length) head.append(el("span", {class: "lock"}, "key"));
  const body = el("div", {class: "body"});
  for (const p of op.parameters || [])
    body.append(el("p", {}, "path parameter ", el("code", {}, p.name), ": ",
                   el("span", {class: "t"}, typeOf(p.schema)), " " + limits(p.schema)));
  if (op.requestBody) {
    for (const [type, media] of Object.entries(op.requestBody.content)) {
      body.append(el("h4", {}, "Request body (" + type + ")"), fields(media.schema));
    }
  }
  body.append(el("h4", {}, "Responses"));
  const table = el("table");
  for (const [code, resp] of Object.entries(op.responses)) {
    const media = (resp.content || {})["application/json"];
    table.append(el("tr", {}, el("td", {}, el("code", {}, code)), el("td", {}, resp.description),
                    el("td", {class: "t"}, media ? typeOf(media.schema) : "")));
  }
  body.append(table);
  const ok = Object.entries(op.responses).find(([code]) => code.startsWith("2"));
  const media = ok && (ok[1].content || {})["application/json"];
  if (media && resolve(media.schema).properties) {
    body.append(el("h4", {}, "Response fields"), fields(media.schema));
  }
  return el("details", {class: "op"}, head, body);
}
fetch("/openapi.json").then((r) => r.json()).then((spec) => {
  doc = spec;
  document.getElementById("intro").textContent = spec.info.description;
  const groups = {};
  for (const [path, item] of Object.entries(spec.paths))
    for (const [method, op] of Object.entries(item))
      (groups[(op.tags || ["other"])[0]] ||= []).push(operation(path, method, op));
  const main = document.getElementById("ops");
  for (const [tag, ops] of Object.entries(groups)) main.append(el("h2", {}, tag), ...ops);
}).catch((err) => { document.getElementById("intro").textContent = "Could not load: " + err; });
</script>
</body>
</html>
"""
