// Jobs: the list, and a job's page with its live loss and accuracy curves
// (fed by the events long poll), the allocation against the caps with the
// coordinator's explanation, each worker's round times and bytes, the
// reassignments, and the trained model.

import * as api from "./api.js";
import { h, card, kv, table, short, pct, bytes, time, datetime, ledgerLink } from "./dom.js";
import { lineChart } from "./charts.js";
import { fairnessCard, historyCard, ownerLabels } from "./network.js";

export async function render(main, ctx) {
  if (ctx.rest[0]) return renderJob(main, ctx.rest[0], ctx);
  document.title = "fairgrid: jobs";
  const list = await api.get("/v1/jobs?limit=500");
  if (!ctx.alive()) return;
  main.append(card(`Jobs coordinated by this node (${list.jobs.length})`,
    list.jobs.length ? table(["job", "name", "model", "dataset", "state", "round", "workers", "loss", "accuracy", "submitted"],
      list.jobs.map((j) => h("tr", {},
        h("td", {}, h("a", { href: `#/jobs/${j.job_id}` }, short(j.job_id))), h("td", {}, j.name),
        h("td", {}, j.model), h("td", {}, j.dataset), h("td", {}, j.state),
        h("td", { class: "num" }, `${j.round}/${j.rounds}`), h("td", { class: "num" }, String(j.workers)),
        h("td", { class: "num" }, j.last_loss == null ? "-" : j.last_loss.toFixed(4)),
        h("td", { class: "num" }, j.last_accuracy == null ? "-" : `${(j.last_accuracy * 100).toFixed(1)}%`),
        h("td", {}, datetime(j.submitted_at_ms)))), { id: "jobs" })
      : h("p", { class: "muted" }, "No jobs yet: submit one with `fairgrid job submit job.toml` or the SDK.")));
}

const TERMINAL = new Set(["finished", "failed"]);

async function renderJob(main, id, { alive }) {
  document.title = `fairgrid: job ${short(id)}`;
  const [status, report, adverts] = await Promise.all([
    api.get(`/v1/jobs/${id}`), api.get(`/v1/jobs/${id}/report`), api.get("/v1/adverts"),
  ]);
  const labels = ownerLabels(adverts);
  const rounds = new Map(report.rounds.map((r) => [r.round, { round: r.round, loss: r.train_loss, acc: r.test_accuracy }]));
  const workerRounds = [];
  const changes = [];

  const statusBox = h("div");
  const curves = h("div", { class: "curves" });
  const workersBox = h("div");
  const changesBox = h("div");
  const allocationBox = h("div");
  const sharesBox = h("div");
  const resultBox = h("div");
  main.append(
    card(`Job ${short(id)}`, statusBox, resultBox),
    card("Loss and accuracy", curves),
    card("Allocation against the caps", allocationBox),
    card("Trained work by owner (this job)", sharesBox),
    card("Workers per round", workersBox),
    card("Reassignments and refusals", changesBox));

  const drawStatus = (st) => statusBox.replaceChildren(kv([
    ["id", h("code", {}, st.job_id)], ["name", st.name], ["state", h("strong", { id: "job-state" }, st.state)],
    ["model / data", `${st.model} on ${st.dataset}, ${st.shards} shards`],
    ["round", `${st.round} of ${st.rounds}`], ["workers", String(st.workers)],
    ["submitted", datetime(st.submitted_at_ms)],
    ...(st.eta_secs != null && !TERMINAL.has(st.state) ? [["eta", `${st.eta_secs} s`]] : []),
    ...(st.error ? [["error", h("span", { class: "error" }, st.error)]] : []),
    ["ledger", ledgerLink("this job's entries", { job: id })],
  ]));
  const drawCurves = () => {
    const pts = [...rounds.values()].sort((a, b) => a.round - b.round);
    const href = `#/ledger?job=${id}&kind=round_completed`;
    curves.replaceChildren(
      lineChart([{ name: "train loss", points: pts.map((r) => ({ x: r.round, y: r.loss, href, title: `round ${r.round}: loss ${r.loss.toFixed(4)}` })) }],
        { id: "loss-chart", label: "train loss per round", yMin: 0, xLabel: "round", yFormat: (v) => v.toFixed(2) }),
      lineChart([{ name: "test accuracy", color: 2, points: pts.filter((r) => r.acc != null).map((r) => ({ x: r.round, y: r.acc * 100, href, title: `round ${r.round}: ${(r.acc * 100).toFixed(2)}%` })) }],
        { id: "accuracy-chart", label: "test accuracy per round", yMin: 0, yMax: 100, xLabel: "round", yFormat: (v) => `${v.toFixed(0)}%` }));
  };
  const drawWorkers = () => {
    const recent = workerRounds.slice(-12).reverse();
    workersBox.replaceChildren(recent.length
      ? table(["round", "worker", "owner", "shards", "samples", "update", "time", "vs fastest", "training", "claimed"], recent.flatMap(({ round, workers }) => {
        const fastest = Math.max(1, Math.min(...workers.map((w) => w.millis)));
        return workers.map((w) => h("tr", {},
          h("td", { class: "num" }, ledgerLink(String(round), { job: id, kind: "round_completed" })),
          h("td", {}, h("code", { title: w.node }, short(w.node))),
          h("td", {}, labels.get(w.owner) || short(w.owner)), h("td", { class: "num" }, String(w.shards)),
          h("td", { class: "num" }, String(w.samples)), h("td", { class: "num" }, bytes(w.bytes_up)),
          h("td", { class: "num" }, `${(w.millis / 1000).toFixed(2)} s`),
          h("td", { class: "num" }, `${(w.millis / fastest).toFixed(2)}×`),
          h("td", { class: "num", title: "its training time, by its own clock" }, w.compute_millis != null ? `${(w.compute_millis / 1000).toFixed(2)} s` : "–"),
          h("td", { class: "num", title: "what its bid's measured speed gives for its samples" }, w.expected_millis != null ? `${(w.expected_millis / 1000).toFixed(2)} s` : "–")));
      }), { id: "worker-rounds" })
      : h("p", { class: "muted" }, "No round completed while this page was open or since the coordinator started."));
  };
  const drawChanges = () => changesBox.replaceChildren(changes.length
    ? h("ul", { id: "changes" }, changes.slice(-50).reverse().map((c) => h("li", {}, `${time(c.at)}: ${c.text}`)))
    : h("p", { class: "muted" }, "none"));
  // `rep`: a report already fetched, else a fresh one.
  const drawAllocation = async (rep) => {
    rep = rep || await api.get(`/v1/jobs/${id}/report`);
    if (!rep.allocation) {
      allocationBox.replaceChildren(h("p", { class: "muted" }, "No allocation yet: the job is still bidding."));
      return;
    }
    const explain = await api.get(`/v1/jobs/${id}/explain`);
    const a = rep.allocation;
    allocationBox.replaceChildren(
      kv([["attempt", String(a.attempt)], ["shards", `${a.shards} (${a.shortfall} short)`],
        ["owner cap", `${a.owner_cap} shards (alpha ${pct(a.alpha, false)})`],
        ["HHI / Gini", `${a.hhi} / ${a.gini.toFixed(3)}`], ["largest owner", pct(a.max_owner_share, false)],
        ["allocation", ledgerLink(short(a.allocation_hash), { job: id, kind: "allocation_made" })]]),
      table(["owner", "shards", "cap", "share", "cost", "payment"], a.owners.map((o) => h("tr", {},
        h("td", {}, o.label || short(o.owner)),
        h("td", { class: "num" }, ledgerLink(String(o.shards), { job: id, kind: "allocation_made" })),
        h("td", { class: "num" }, String(o.cap)), h("td", { class: "num" }, pct(o.share, false)),
        h("td", { class: "num" }, String(o.cost)), h("td", { class: "num" }, String(o.payment))))),
      h("details", { open: true }, h("summary", {}, "Why this allocation (the coordinator's explanation)"),
        h("pre", { id: "explain" }, explain)));
  };
  // The owners' shares of the rounds recorded so far (the ledger's view).
  const drawShares = async () => {
    if (!rounds.size) {
      sharesBox.replaceChildren(h("p", { class: "muted" }, "No round recorded yet."));
      return;
    }
    const [fair, hist] = await Promise.all([
      api.get(`/v1/fairness?job=${id}`), api.get(`/v1/fairness/history?job=${id}`)]);
    sharesBox.replaceChildren(
      fairnessCard(fair, hist.cap_ppm, labels, "Now", id),
      historyCard(hist, labels, "Over the job's rounds"));
  };
  const drawResult = async (st, rep) => {
    if (st.state !== "finished") return resultBox.replaceChildren();
    const done = rep || await api.get(`/v1/jobs/${id}/report`);
    const button = h("button", { type: "button", id: "download" }, "Download the trained model (safetensors)");
    button.addEventListener("click", async () => {
      const res = await api.getRaw(`/v1/jobs/${id}/result`);
      const url = URL.createObjectURL(await res.blob());
      const a = h("a", { href: url, download: `${id}.safetensors` });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    });
    resultBox.replaceChildren(h("p", {}, button, done.model_hash ? [" model hash ", h("code", {}, done.model_hash)] : ""));
  };

  // An event as the API sends it: {seq, at_ms, event, ...its fields}.
  const onEvent = (e) => {
    switch (e.event) {
      case "round_completed":
        rounds.set(e.round, { round: e.round, loss: e.train_loss, acc: e.test_accuracy });
        if (e.workers && e.workers.length) workerRounds.push({ round: e.round, workers: e.workers });
        return true;
      case "reallocated": changes.push({ at: e.at_ms, text: `re-cleared (attempt ${e.attempt}): ${e.reason}` }); return true;
      case "worker_missed": changes.push({ at: e.at_ms, text: `round ${e.round}: ${short(e.node)} missed it` }); return true;
      case "update_rejected": changes.push({ at: e.at_ms, text: `round ${e.round}: ${short(e.node)}'s update refused: ${e.reason}` }); return true;
      case "cleared": changes.push({ at: e.at_ms, text: `cleared (attempt ${e.attempt}): ${e.assigned} shards to ${e.winners} nodes` }); return true;
      default: return false;
    }
  };

  drawStatus(status);
  await drawResult(status, report);
  drawCurves();
  drawWorkers();
  drawChanges();
  await drawAllocation(report);
  if (!alive()) return;
  await drawShares();
  if (!alive()) return;

  // Live: read every event, then wait for more until the job ends or the
  // page is left. The first pass is done before the page counts as ready.
  let after = 0;
  let state = status.state;
  const poll = async (waitSecs) => {
    const res = await api.get(`/v1/jobs/${id}/events?after=${after}&wait_secs=${waitSecs}`);
    after = res.next;
    let changed = false;
    for (const e of res.events) changed = onEvent(e) || changed;
    return { res, changed };
  };
  for (;;) {
    const { res } = await poll(0);
    if (res.events.length < 500) break;
  }
  drawCurves(); drawWorkers(); drawChanges();
  // Stops quietly when the node cannot be reached (the page shows what it
  // had; reloading tries again).
  (async () => {
    while (alive() && !TERMINAL.has(state)) {
      const out = await poll(10);
      if (!alive()) return;
      if (out.res.state !== state || out.changed) {
        state = out.res.state;
        drawCurves(); drawWorkers(); drawChanges();
        const st = await api.get(`/v1/jobs/${id}`);
        if (!alive()) return;
        drawStatus(st);
        await drawResult(st);
        if (out.res.events.some((e) => e.event === "cleared" || e.event === "reallocated")) await drawAllocation();
        if (out.res.events.some((e) => e.event === "round_completed")) await drawShares();
      }
    }
  })().catch(() => {});
}
