// Renders this server's OpenAPI description as a plain list of endpoints (no external assets).
"use strict";

function el(tag, props, ...children) {
  const node = Object.assign(document.createElement(tag), props || {});
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function schemaText(schema, spec) {
  if (!schema) return "";
  if (schema.$ref) return schema.$ref.split("/").pop();
  if (schema.enum) return schema.enum.join(" | ");
  return schema.type || "";
}

function bodyFields(op) {
  const content = (op.requestBody || {}).content || {};
  const [type, media] = Object.entries(content)[0] || [];
  if (!media || !media.schema || !media.schema.properties) return null;
  const rows = Object.entries(media.schema.properties).map(([name, s]) =>
    el("li", {}, el("code", { textContent: name }), ` (${s.format || schemaText(s)}) ${s.description || ""}`));
  return el("div", {}, el("p", { className: "hint", textContent: `Body: ${type}` }), el("ul", {}, ...rows));
}

function params(op) {
  if (!op.parameters || !op.parameters.length) return null;
  const rows = op.parameters.map((p) =>
    el("li", {}, el("code", { textContent: p.name }), ` (${p.in}${p.required ? ", required" : ""}) ${schemaText(p.schema)}`));
  return el("div", {}, el("p", { className: "hint", textContent: "Parameters" }), el("ul", {}, ...rows));
}

function endpoint(path, method, op) {
  const title = el("h2", {}, el("code", { textContent: `${method.toUpperCase()} ${path}` }));
  const codes = Object.entries(op.responses || {}).map(([code, r]) => `${code} ${r.description || ""}`).join(" · ");
  return el("section", { className: "card" }, title,
    el("p", { textContent: op.summary || "" }),
    op.description ? el("p", { className: "hint", textContent: op.description }) : null,
    params(op), bodyFields(op),
    codes ? el("p", { className: "hint", textContent: `Responses: ${codes}` }) : null);
}

async function render() {
  const spec = await (await fetch("/openapi.json")).json();
  const sections = [];
  for (const [path, methods] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(methods)) sections.push(endpoint(path, method, op));
  }
  document.getElementById("endpoints").replaceChildren(...sections);
}

render();
