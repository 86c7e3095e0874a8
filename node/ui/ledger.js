// The ledger: this node's entries, filtered by job, owner or kind (every
// figure elsewhere links here), each with its body and signed bytes, and
// a button that verifies the whole chain on the node.

import * as api from "./api.js";
import { h, card, table, short, datetime, errorBox } from "./dom.js";

const KINDS = ["advert_seen", "certificate_used", "job_submitted", "allocation_made", "round_completed",
  "credit", "verification", "job_finished", "job_failed"];
const PAGE = 100;

export async function render(main, { params, alive }) {
  document.title = "fairgrid: ledger";
  const job = params.get("job"), owner = params.get("owner"), kind = params.get("kind"), seq = params.get("seq");
  let entries, nextAfter = null, total = null, scope;
  if (seq !== null) {
    entries = [await api.get(`/v1/ledger/entries/${encodeURIComponent(seq)}`)];
    scope = `entry ${seq}`;
  } else if (job) {
    entries = (await api.get(`/v1/ledger/jobs/${encodeURIComponent(job)}`)).filter((e) => !kind || e.kind === kind);
    scope = `job ${short(job)}${kind ? `, ${kind}` : ""}`;
  } else {
    const q = new URLSearchParams({ limit: String(PAGE) });
    for (const [k, v] of [["owner", owner], ["kind", kind], ["after", params.get("after")]]) if (v) q.set(k, v);
    const page = await api.get(`/v1/ledger?${q}`);
    entries = page.entries;
    nextAfter = page.next_after;
    total = page.total;
    scope = [owner && `owner ${short(owner)}`, kind].filter(Boolean).join(", ") || "all own entries";
  }
  if (!alive()) return;

  const verifyResult = h("span", { id: "verify-result", role: "status" });
  const verify = h("button", { type: "button", id: "verify" }, "Verify the whole ledger");
  verify.addEventListener("click", async () => {
    verify.disabled = true;
    verifyResult.textContent = "verifying…";
    try {
      const r = await api.post("/v1/ledger/verify");
      verifyResult.className = r.ok ? "ok" : "error";
      verifyResult.dataset.ok = String(r.ok);
      verifyResult.textContent = r.ok
        ? `verified: ${r.own_entries} own entries (every hash link and signature) and ${r.foreign_entries} foreign entries, head ${short(r.head || "")}, in ${r.millis} ms`
        : `FAILED: ${r.error}`;
    } catch (err) {
      verifyResult.replaceChildren(errorBox(err));
    } finally {
      verify.disabled = false;
    }
  });

  const filters = h("form", { id: "ledger-filter", class: "filters" },
    h("label", {}, "job ", h("input", { name: "job", value: job || "", size: 20, placeholder: "64 hex digits" })),
    h("label", {}, " owner ", h("input", { name: "owner", value: owner || "", size: 20, placeholder: "64 hex digits" })),
    h("label", {}, " kind ", h("select", { name: "kind" }, h("option", { value: "" }, "any"),
      KINDS.map((k) => h("option", { value: k, selected: k === kind }, k)))),
    " ", h("button", { type: "submit" }, "Show"));
  filters.addEventListener("submit", (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(filters)) if (v) q.set(k, v);
    location.hash = `#/ledger?${q}`;
  });

  const rows = entries.map((e) => h("tr", { dataset: { seq: String(e.seq) } },
    // Foreign entries' seqs are their authors', not this chain's.
    h("td", { class: "num" }, e.own ? h("a", { href: `#/ledger?seq=${e.seq}` }, String(e.seq)) : String(e.seq)),
    h("td", {}, datetime(e.timestamp)), h("td", {}, e.kind),
    h("td", {}, e.own ? "this node" : h("code", { title: e.author }, short(e.author))),
    h("td", {}, summary(e)),
    h("td", {}, h("details", {}, h("summary", {}, "body"), h("pre", {}, JSON.stringify(e.body, null, 1)),
      h("p", { class: "muted" }, "signed envelope (hex): ", h("code", { class: "wrap" }, e.signed_hex.slice(0, 256) + (e.signed_hex.length > 256 ? "…" : "")))))));
  const next = nextAfter != null
    ? h("a", { href: `#/ledger?${new URLSearchParams({ ...(owner ? { owner } : {}), ...(kind ? { kind } : {}), after: String(nextAfter) })}`, id: "ledger-next" }, "next page →")
    : "";
  main.append(
    card("Verify", h("p", {}, verify, " ", verifyResult)),
    card(`Ledger: ${scope}${total != null ? ` (${total} own entries in all)` : ""}`, filters,
      entries.length ? table(["seq", "time", "kind", "author", "what", ""], rows, { id: "ledger-entries" })
        : h("p", { class: "muted" }, "no entries"), h("p", {}, next)));
}

function summary(e) {
  const [kind, b] = Object.entries(e.body)[0] || [];
  switch (kind) {
    case "AdvertSeen": return `advert of ${short(b.node)} (owner ${short(b.owner)})`;
    case "CertificateUsed": return `certificate ${b.serial} of ${b.label} for ${short(b.node)}`;
    case "JobSubmitted": return `job ${short(b.job_id)}: ${b.shards} shards, alpha ${(b.alpha_ppm / 1e4).toFixed(1)}%`;
    case "AllocationMade": return `allocation of job ${short(b.job_id)} from ${b.bids.length} bids`;
    case "RoundCompleted": return `job ${short(b.job_id)} round ${b.round}: ${b.participants.length} workers, ${b.participants.reduce((n, p) => n + p.shards.length, 0)} shards`;
    case "Credit": return `${(b.amount / 1000).toFixed(3)} credits to ${short(b.owner)} for ${b.shards} shards of job ${short(b.job_id)}`;
    case "Verification": return `job ${short(b.job_id)} round ${b.round}: ${short(b.node)} ${b.passed ? "passed" : "FAILED"} ${b.detail}`;
    case "JobFinished": return `job ${short(b.job_id)} finished: ${b.rounds} rounds, accuracy ${(b.test_accuracy_ppm / 1e4).toFixed(2)}%`;
    case "JobFailed": return `job ${short(b.job_id)} failed after ${b.rounds} rounds: ${b.reason}`;
    default: return kind || "";
  }
}
