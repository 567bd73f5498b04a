// Renders /api/openapi.json as a reference page: operations by tag with
// their parameters, request body, responses and schemas. No dependencies.
"use strict";

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return e;
}

function resolve(spec, s) {
  if (s && s.$ref) return { name: s.$ref.split("/").pop(), schema: spec.components.schemas[s.$ref.split("/").pop()] };
  return { name: null, schema: s };
}

function typeOf(spec, s) {
  if (!s) return "";
  if (s.$ref) return s.$ref.split("/").pop();
  if (s.type === "array") return `${typeOf(spec, s.items)}[]`;
  const t = Array.isArray(s.type) ? s.type.filter((x) => x !== "null").join("|") + (s.type.includes("null") ? "?" : "") : (s.type || "any");
  return s.format ? `${t} (${s.format})` : t;
}

function schemaTable(spec, s) {
  const { name, schema } = resolve(spec, s);
  if (!schema || !schema.properties) return el("p", {}, name || typeOf(spec, schema) || "any");
  const rows = Object.entries(schema.properties).map(([k, p]) =>
    el("tr", {}, el("td", {}, el("code", {}, k)), el("td", {}, typeOf(spec, p)),
      el("td", {}, (schema.required || []).includes(k) ? "required" : ""), el("td", {}, p.description || "")));
  return el("div", {}, name ? el("p", {}, el("strong", {}, name)) : "",
    el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "field"), el("th", {}, "type"), el("th", {}, ""), el("th", {}, "description"))), el("tbody", {}, ...rows)));
}

function operation(spec, path, method, op) {
  const sec = el("section", { id: op.operationId || `${method}-${path}` });
  sec.append(el("h3", {}, el("code", {}, method.toUpperCase()), " ", el("code", {}, path)));
  if (op.summary) sec.append(el("p", {}, op.summary));
  if (op.description) sec.append(el("p", {}, op.description));
  const noKey = Array.isArray(op.security) && op.security.every((r) => Object.keys(r).length === 0);
  sec.append(el("p", {}, noKey ? "No API key needed." : "Needs an API key (Authorization: Bearer)."));
  if (op.parameters && op.parameters.length) {
    sec.append(el("h4", {}, "Parameters"), el("table", {},
      el("tbody", {}, ...op.parameters.map((p) => el("tr", {}, el("td", {}, el("code", {}, p.name)), el("td", {}, p.in),
        el("td", {}, typeOf(spec, p.schema)), el("td", {}, p.required ? "required" : ""), el("td", {}, p.description || ""))))));
  }
  if (op.requestBody) {
    sec.append(el("h4", {}, "Request body"));
    for (const [ct, media] of Object.entries(op.requestBody.content || {})) {
      sec.append(el("p", {}, el("code", {}, ct)), schemaTable(spec, media.schema));
    }
  }
  sec.append(el("h4", {}, "Responses"));
  for (const [code, r] of Object.entries(op.responses || {})) {
    const item = el("div", { class: "response" }, el("p", {}, el("strong", {}, code), " ", r.description || ""));
    for (const [ct, media] of Object.entries(r.content || {})) item.append(el("p", {}, el("code", {}, ct)), schemaTable(spec, media.schema));
    sec.append(item);
  }
  return sec;
}

document.addEventListener("DOMContentLoaded", async () => {
  const main = document.getElementById("reference");
  try {
    const r = await fetch("/api/openapi.json", { credentials: "same-origin" });
    if (!r.ok) throw new Error(`${r.status}: ${await r.text()}`);
    const spec = await r.json();
    document.getElementById("version").textContent = `${spec.info.title} ${spec.info.version} · OpenAPI ${spec.openapi}`;
    main.replaceChildren(el("p", {}, spec.info.description || ""));
    const byTag = new Map((spec.tags || []).map((t) => [t.name, []]));
    for (const [path, item] of Object.entries(spec.paths)) {
      for (const [method, op] of Object.entries(item)) {
        const tag = (op.tags && op.tags[0]) || "other";
        if (!byTag.has(tag)) byTag.set(tag, []);
        byTag.get(tag).push([path, method, op]);
      }
    }
    const about = new Map((spec.tags || []).map((t) => [t.name, t.description || ""]));
    for (const [tag, ops] of byTag) {
      if (!ops.length) continue;
      const sec = el("section", {}, el("h2", {}, tag), el("p", {}, about.get(tag) || ""));
      for (const [path, method, op] of ops) sec.append(operation(spec, path, method, op));
      main.append(sec);
    }
  } catch (e) {
    main.replaceChildren(el("p", {}, `Could not load the description: ${e.message}`));
  }
});
