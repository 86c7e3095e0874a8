// Small DOM and formatting helpers. Everything is built with
// createElement and text nodes, never by parsing HTML, so data can never run as
// markup, and nothing inline that the Content-Security-Policy would block.

const SVG_NS = "http://www.w3.org/2000/svg";

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  return fill(el, attrs, children);
}

export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  return fill(el, attrs, children);
}

function fill(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function table(headers, rows, attrs = {}) {
  return h("table", attrs,
    h("thead", {}, h("tr", {}, headers.map((t) => h("th", {}, t)))),
    h("tbody", {}, rows));
}

export function card(title, ...body) {
  return h("section", { class: "card" }, h("h2", {}, title), ...body);
}

export function kv(pairs) {
  return h("dl", { class: "kv" }, pairs.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

export const short = (id) => (id && id.length > 14 ? `${id.slice(0, 6)}…${id.slice(-6)}` : id || "");

export function pct(ppmOrFraction, isPpm = true) {
  const f = isPpm ? ppmOrFraction / 1e6 : ppmOrFraction;
  return `${(f * 100).toFixed(1)}%`;
}

export function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export const time = (ms) => new Date(ms).toLocaleTimeString();
export const datetime = (ms) => new Date(ms).toLocaleString();

// A link to the ledger entries a figure comes from.
export function ledgerLink(text, query) {
  const q = new URLSearchParams(query).toString();
  return h("a", { href: `#/ledger?${q}`, class: "src", title: "the ledger entries this comes from" }, text);
}

export function errorBox(err) {
  return h("p", { class: "error" }, String(err && err.message ? err.message : err));
}
