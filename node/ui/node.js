// This node: identity and reachability, what it offers, its peers, the
// jobs it coordinates and works on, and its owner's credits over time.

import * as api from "./api.js";
import { h, card, kv, table, short, time, datetime, ledgerLink } from "./dom.js";
import { lineChart } from "./charts.js";

export async function render(main, { alive }) {
  document.title = "fairgrid: this node";
  const [status, peers, jobs] = await Promise.all([
    api.get("/v1/status"), api.get("/v1/peers"), api.get("/v1/jobs?limit=100"),
  ]);
  const credits = await ownCredits(status.owner);
  if (!alive()) return;
  const offered = status.own_advert ? status.own_advert.offered : null;
  main.append(
    card("This node",
      kv([
        ["node", h("code", {}, status.node_id)],
        ["owner", [h("code", {}, short(status.owner)), ` ${status.owner_label} `,
          status.certified ? "(certified)" : "(self-owned)", " ",
          ledgerLink("entries", { owner: status.owner })]],
        ["mode", status.consortium ? "consortium" : "open"],
        ["uptime", `${status.uptime_secs} s`],
        ["reachable at", status.listen_addrs.length ? h("ul", {}, status.listen_addrs.map((a) => h("li", {}, h("code", {}, a)))) : "not listening"],
        ["offering", offered
          ? `${(offered.cpu_milli / 1000).toFixed(1)} cores, ${offered.mem_mib} MiB` +
            (offered.gpu_milli ? `, ${(offered.gpu_milli / 1000).toFixed(1)} GPUs (${offered.gpu_mem_mib} MiB)` : "")
          : "nothing"],
        ...(status.not_offering ? [["not offering because", h("strong", { id: "not-offering" }, status.not_offering)]] : []),
        ["ledger", [`${status.ledger.entries} own entries, ${status.ledger.foreign_entries} from others `, ledgerLink("open", {})]],
      ])),
    creditsCard(credits, status.owner),
    card(`Jobs coordinated here (${jobs.jobs.length})`,
      jobs.jobs.length ? table(["job", "name", "state", "round", "accuracy"], jobs.jobs.map((j) => h("tr", {},
        h("td", {}, h("a", { href: `#/jobs/${j.job_id}` }, short(j.job_id))),
        h("td", {}, j.name), h("td", {}, j.state), h("td", {}, `${j.round}/${j.rounds}`),
        h("td", {}, j.last_accuracy == null ? "-" : `${(j.last_accuracy * 100).toFixed(1)}%`)))) : h("p", { class: "muted" }, "none")),
    card(`Jobs worked on (${credits.jobs.size})`,
      credits.jobs.size ? h("ul", {}, [...credits.jobs].map((j) => h("li", {}, ledgerLink(short(j), { job: j }))))
        : h("p", { class: "muted" }, "no credit recorded yet")),
    card(`Peers (${peers.length})`,
      table(["peer", "agent", "rtt", "gossip score", "admitted", "connected for"], peers.map((p) => h("tr", {},
        h("td", {}, h("code", { title: p.peer_id }, short(p.peer_id))), h("td", {}, p.agent || "-"),
        h("td", {}, p.rtt_ms == null ? "-" : `${p.rtt_ms} ms`), h("td", {}, p.gossip_score.toFixed(1)),
        h("td", {}, p.admitted ? "yes" : "no"), h("td", {}, `${Math.round(p.connected_for_ms / 1000)} s`))))),
  );
}

// Every Credit entry naming this node's owner (own chain), oldest first.
async function ownCredits(owner) {
  const entries = [];
  let after = null;
  for (let page = 0; page < 20; page++) {
    const q = new URLSearchParams({ kind: "credit", owner, limit: "1000" });
    if (after !== null) q.set("after", after);
    const res = await api.get(`/v1/ledger?${q}`);
    entries.push(...res.entries);
    if (res.next_after == null) break;
    after = res.next_after;
  }
  const jobs = new Set(entries.map((e) => e.body.Credit.job_id));
  return { entries, jobs };
}

function creditsCard({ entries }, owner) {
  let total = 0;
  // Cumulative: nothing before the first credit.
  const start = entries.length ? [{ x: entries[0].timestamp - 1, y: 0, title: "before the first credit" }] : [];
  const points = start.concat(entries.map((e) => {
    total += e.body.Credit.amount;
    return { x: e.timestamp, y: total / 1000, href: `#/ledger?seq=${e.seq}`,
      title: `${datetime(e.timestamp)}: +${(e.body.Credit.amount / 1000).toFixed(3)} (entry ${e.seq})` };
  }));
  return card("Credits earned",
    h("p", {}, "Total ", h("strong", { id: "credits-total" }, (total / 1000).toFixed(3)), " credits over ",
      ledgerLink(`${entries.length} credit ${entries.length === 1 ? "entry" : "entries"}`, { kind: "credit", owner })),
    points.length ? lineChart([{ name: "credits", points }], { id: "credits-chart", yMin: 0, xFormat: time, yFormat: (v) => v.toFixed(1) })
      : h("p", { class: "muted" }, "no credits yet"));
}

