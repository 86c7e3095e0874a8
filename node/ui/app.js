// The dashboard's shell: login (a token, or a one-time link from
// `fairgrid ui`), the hash router, and the page each route renders.
// Each page sets data-ready on <main> once its data is drawn (the
// browser tests and the load benchmark wait on it).

import * as api from "./api.js";
import { h, errorBox } from "./dom.js";
import * as node from "./node.js";
import * as network from "./network.js";
import * as jobs from "./jobs.js";
import * as ledger from "./ledger.js";

const main = document.getElementById("main");
const PAGES = { node, network, jobs, ledger };
// Bumped on every navigation: a page's late answers and live polls stop
// when it is no longer shown.
let generation = 0;

function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, query = ""] = hash.split("?");
  const [page = "node", ...rest] = path.split("/");
  return { page, rest, params: new URLSearchParams(query) };
}

async function show() {
  const gen = ++generation;
  const alive = () => gen === generation;
  main.replaceChildren();
  delete main.dataset.ready;
  delete main.dataset.renderMs;
  delete main.dataset.readyAtMs;
  const started = performance.now();
  const { page, rest, params } = route();
  const loggedIn = Boolean(api.token());
  document.getElementById("logout").hidden = !loggedIn;
  if (!loggedIn) return login();
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", a.dataset.page === page);
  }
  const module = PAGES[page];
  try {
    if (!module) throw new Error(`no page "${page}"`);
    await module.render(main, { rest, params, alive });
  } catch (err) {
    if (!alive()) return;
    if (err instanceof api.ApiError && err.status === 401) return;
    main.append(errorBox(err));
  }
  if (alive()) {
    main.dataset.renderMs = (performance.now() - started).toFixed(1);
    // Since the document's navigation started (the load benchmark).
    main.dataset.readyAtMs = performance.now().toFixed(1);
    main.dataset.ready = page;
  }
}

function login(message) {
  generation++;
  document.title = "fairgrid: log in";
  const input = h("input", { type: "password", id: "token", autocomplete: "current-password",
    placeholder: "the node's API token", required: true, size: 48 });
  const status = h("p", { id: "login-error", class: "error", role: "alert" }, message || "");
  const form = h("form", { id: "login", class: "card" },
    h("h2", {}, "Log in"),
    h("p", {}, "Paste the token in the node's data dir (", h("code", {}, "api.token"),
      "), or run ", h("code", {}, "fairgrid ui"), " on the node for a one-time link."),
    input, " ", h("button", { type: "submit" }, "Log in"), status);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    status.textContent = "";
    try {
      await api.tryToken(input.value.trim());
      api.setToken(input.value.trim());
      location.hash = "#/node";
      show();
    } catch (err) {
      status.textContent = err.status === 401 ? "That token is wrong: the node refused it." : String(err.message);
    }
  });
  main.replaceChildren(form);
  main.dataset.ready = "login";
  input.focus();
}

// A one-time link: #code=... . The code leaves the address bar at once
// (and so the history) before it is traded for the token.
async function redeemFromFragment() {
  const match = location.hash.match(/^#code=([0-9a-f]{1,64})$/);
  if (!match) return null;
  history.replaceState(null, "", location.pathname + "#/node");
  try {
    const { token } = await api.redeem(match[1]);
    api.setToken(token);
    return null;
  } catch (err) {
    return `That link did not work (${err.message}).`;
  }
}

document.getElementById("logout").addEventListener("click", () => {
  api.clearToken();
  location.hash = "#/node";
  show();
});
window.addEventListener("fairgrid-logout", () => login("The node refused the saved token: log in again."));
window.addEventListener("hashchange", show);

redeemFromFragment().then((problem) => (problem ? login(problem) : show()));
