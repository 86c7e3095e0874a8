// The network: each owner's share of the trained work against the cap,
// now and over time, the concentration metrics, the jobs, and every live
// advert (searchable; built once, filtered by hiding rows, so a thousand
// rows stay fast).

import * as api from "./api.js";
import { h, card, kv, table, short, pct, time, ledgerLink } from "./dom.js";
import { lineChart, shareBar, legend } from "./charts.js";

export async function render(main, { alive }) {
  document.title = "fairgrid: network";
  const [fairness, history, adverts, jobs] = await Promise.all([
    api.get("/v1/fairness"), api.get("/v1/fairness/history"),
    api.get("/v1/adverts"), api.get("/v1/jobs?limit=500"),
  ]);
  if (!alive()) return;
  const labels = ownerLabels(adverts);
  main.append(
    fairnessCard(fairness, history.cap_ppm, labels, "Owners' share of the trained work"),
    historyCard(history, labels, "Shares over time (whole ledger)"),
    jobsCard(jobs.jobs),
    advertsCard(adverts),
  );
}

export function ownerLabels(adverts) {
  const labels = new Map();
  for (const a of adverts) labels.set(a.owner, a.owner_label);
  return labels;
}

const ownerName = (labels, owner) => (labels.get(owner) ? `${labels.get(owner)} (${short(owner)})` : short(owner));

// One row per owner: units (linked to the entries), share, bar against the cap.
export function fairnessCard(f, capPpm, labels, title, job) {
  const cap = capPpm / 1e6;
  const rows = f.owners.map((o, i) => h("tr", { dataset: { owner: o.owner, sharePpm: String(o.share_ppm) } },
    h("td", {}, ownerName(labels, o.owner)),
    h("td", { class: "num" }, ledgerLink(String(o.units), job ? { job } : { owner: o.owner, kind: "round_completed" })),
    h("td", { class: "num share" }, pct(o.share_ppm)),
    h("td", {}, shareBar(o.share_ppm / 1e6, cap, i))));
  return card(title,
    kv([
      ["basis", `${f.basis.replace("_", " ")} (${f.total_units} in all)`],
      ["cap", `${pct(capPpm)} per owner${job ? " (the job's alpha)" : " (this node's network cap, beta)"}`],
      ["largest owner", h("span", { id: "max-share" }, pct(f.max_owner_share_ppm))],
      ["HHI", String(f.hhi)], ["Gini", f.gini.toFixed(3)],
      ["Nakamoto 50% / 33%", `${f.nakamoto_50} / ${f.nakamoto_33}`],
      ["Jain", f.jain.toFixed(3)],
      ["entries", ledgerLink(job ? "this job's entries" : "rounds recorded", job ? { job } : { kind: "round_completed" })],
    ]),
    f.owners.length ? table(["owner", "units", "share", "against the cap"], rows, { id: "owner-shares" })
      : h("p", { class: "muted", id: "owner-shares-empty" }, "no work recorded yet"));
}

export function historyCard(history, labels, title) {
  if (!history.points.length) return card(title, h("p", { class: "muted" }, "no rounds recorded yet"));
  const series = history.owners.map((owner, i) => ({
    name: ownerName(labels, owner), color: i,
    points: history.points.map((p) => ({
      x: p.timestamp, y: p.share_ppm[i] / 1e4,
      href: p.author ? `#/ledger?owner=${owner}&kind=round_completed` : undefined,
      title: `${ownerName(labels, owner)}: ${(p.share_ppm[i] / 1e4).toFixed(1)}% after the round at ${time(p.timestamp)} (entry ${p.seq})`,
    })),
  }));
  return card(title,
    lineChart(series, { id: "share-history", yMin: 0, yMax: 100, xFormat: time,
      yFormat: (v) => `${v.toFixed(0)}%`, cap: { y: history.cap_ppm / 1e4, label: `cap ${pct(history.cap_ppm)}` } }),
    legend(series));
}

function jobsCard(jobs) {
  return card(`Jobs coordinated by this node (${jobs.length})`,
    jobs.length ? table(["job", "name", "model", "state", "round", "workers", "accuracy"], jobs.map((j) => h("tr", {},
      h("td", {}, h("a", { href: `#/jobs/${j.job_id}` }, short(j.job_id))), h("td", {}, j.name),
      h("td", {}, j.model), h("td", {}, j.state), h("td", { class: "num" }, `${j.round}/${j.rounds}`),
      h("td", { class: "num" }, String(j.workers)),
      h("td", { class: "num" }, j.last_accuracy == null ? "-" : `${(j.last_accuracy * 100).toFixed(1)}%`))), { id: "network-jobs" })
      : h("p", { class: "muted" }, "none"));
}

function advertsCard(adverts) {
  const rows = adverts.map((a) => {
    const o = a.offered;
    const row = h("tr", {},
      h("td", {}, h("code", { title: a.node_id }, short(a.node_id))),
      h("td", {}, `${a.owner_label} (${short(a.owner)})`),
      h("td", {}, a.certified ? "yes" : "no"),
      h("td", { class: "num" }, (o.cpu_milli / 1000).toFixed(1)),
      h("td", { class: "num" }, String(o.mem_mib)),
      h("td", { class: "num" }, o.gpu_milli ? (o.gpu_milli / 1000).toFixed(1) : "-"),
      h("td", { class: "num" }, String(a.hardware.cpu_gflops)),
      h("td", { class: "num" }, String(a.price_floor)),
      h("td", {}, a.from === "self" ? "self" : short(a.from)));
    return row;
  });
  // What the filter matches, kept beside the rows rather than in the DOM.
  const haystacks = adverts.map((a) => `${a.node_id} ${a.owner} ${a.owner_label} ${a.hardware.gpus.map((g) => g.model).join(" ")}`.toLowerCase());
  const count = h("span", { id: "adverts-shown" }, String(rows.length));
  const search = h("input", { type: "search", id: "adverts-search", placeholder: "filter by node, owner, label or GPU" });
  search.addEventListener("input", () => {
    const q = search.value.trim().toLowerCase();
    let shown = 0;
    rows.forEach((r, i) => {
      const hit = !q || haystacks[i].includes(q);
      if (r.hidden === hit) r.hidden = !hit;
      if (hit) shown++;
    });
    count.textContent = String(shown);
  });
  return card(`Live adverts (${adverts.length})`,
    h("p", {}, search, " showing ", count),
    table(["node", "owner", "certified", "cores", "MiB", "GPUs", "GFLOP/s", "floor", "heard from"], rows, { id: "adverts" }));
}
