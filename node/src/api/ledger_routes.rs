//! Ledger routes: pages (by kind or owner), entries, a job's entries,
//! verification.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use fairgrid_protocol::ledger::EntryKind;
use fairgrid_protocol::{Hash32, OwnerId};
use fairgrid_sdk::{LedgerEntryView, LedgerPage, VerifyReport};

use super::error::ApiError;
use super::views;
use crate::ledger::{LedgerStore, StoredEntry};
use crate::state::Shared;

const MAX_PAGE: usize = 1000;

pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/ledger", get(page))
        .route("/v1/ledger/entries/{seq}", get(entry))
        .route("/v1/ledger/jobs/{job}", get(job))
        .route("/v1/ledger/verify", post(verify))
}

/// Own entries an owner-filtered page reads at most before it answers
/// (with `next_after` where it stopped), so one request stays short.
const MAX_SCANNED: usize = 20_000;

fn number(params: &HashMap<String, String>, name: &str) -> Result<Option<u64>, ApiError> {
    params
        .get(name)
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!(
                    "query parameter {name}={v:?} is not a non-negative integer"
                ))
            })
        })
        .transpose()
}

pub(super) fn job_id(text: &str) -> Result<Hash32, ApiError> {
    Hash32::from_hex(text)
        .map_err(|_| ApiError::bad_request(format!("{text:?} is not a job id (64 hex digits)")))
}

fn view(stored: &StoredEntry) -> Result<LedgerEntryView, ApiError> {
    Ok(views::entry(stored, &stored.entry()?))
}

async fn page(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<LedgerPage>, ApiError> {
    let after = number(&params, "after")?;
    let limit = number(&params, "limit")?.unwrap_or(100) as usize;
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(format!(
            "limit must be in 1..={MAX_PAGE}"
        )));
    }
    let store = shared.ledger.store();
    let kind = params
        .get("kind")
        .map(|kind| {
            EntryKind::ALL
                .into_iter()
                .find(|k| k.name() == kind)
                .ok_or_else(|| ApiError::bad_request(format!("unknown entry kind {kind:?}")))
        })
        .transpose()?;
    let owner = params
        .get("owner")
        .map(|o| {
            o.parse::<OwnerId>().map_err(|_| {
                ApiError::bad_request(format!("owner={o:?} is not an owner id (64 hex digits)"))
            })
        })
        .transpose()?;
    let Some(owner) = owner else {
        let entries = match kind {
            Some(kind) => {
                let mut out = Vec::new();
                for seq in store.seqs_of_kind(kind, after, limit)? {
                    out.extend(store.get(seq)?);
                }
                out
            }
            None => store.page(after, limit)?,
        };
        let views = entries.iter().map(view).collect::<Result<Vec<_>, _>>()?;
        let next_after = if views.len() == limit {
            views.last().map(|v| v.seq)
        } else {
            None
        };
        return Ok(Json(LedgerPage {
            entries: views,
            next_after,
            total: store.len()?,
        }));
    };
    let store = store.clone();
    tokio::task::spawn_blocking(move || owner_page(&store, owner, kind, after, limit))
        .await
        .map_err(|e| ApiError::internal(format!("ledger scan: {e}")))?
        .map(Json)
}

/// Own entries after `after` that concern `owner` (the ledger's owner
/// index: its adverts and certificates, the rounds its nodes trained, its
/// credits), of `kind` if given. Reads at most [`MAX_SCANNED`] entries;
/// `next_after` is where to go on.
fn owner_page(
    store: &LedgerStore,
    owner: OwnerId,
    kind: Option<EntryKind>,
    after: Option<u64>,
    limit: usize,
) -> Result<LedgerPage, ApiError> {
    let seqs = match after {
        Some(u64::MAX) => Default::default(),
        _ => store.seqs_for_owner(&owner)?,
    };
    let start = after.map_or(0, |a| a + 1);
    let mut views = Vec::new();
    let mut next_after = None;
    for (read, seq) in seqs.range(start..).enumerate() {
        if read == MAX_SCANNED || views.len() == limit {
            next_after = Some(*seq - 1);
            break;
        }
        let Some(stored) = store.get(*seq)? else {
            continue;
        };
        let entry = stored.entry()?;
        if kind.is_none_or(|k| entry.body.kind() == k) {
            views.push(views::entry(&stored, &entry));
        }
    }
    Ok(LedgerPage {
        entries: views,
        next_after,
        total: store.len()?,
    })
}

async fn entry(
    State(shared): State<Arc<Shared>>,
    Path(seq): Path<String>,
) -> Result<Json<LedgerEntryView>, ApiError> {
    let seq: u64 = seq
        .parse()
        .map_err(|_| ApiError::bad_request(format!("{seq:?} is not an entry seq")))?;
    let stored = shared
        .ledger
        .store()
        .get(seq)?
        .ok_or_else(|| ApiError::not_found(format!("no entry with seq {seq}")))?;
    Ok(Json(view(&stored)?))
}

async fn job(
    State(shared): State<Arc<Shared>>,
    Path(job): Path<String>,
) -> Result<Json<Vec<LedgerEntryView>>, ApiError> {
    let id = job_id(&job)?;
    let entries = shared.ledger.store().entries_for_job(&id)?;
    if entries.is_empty() {
        return Err(ApiError::not_found(format!("unknown job id {job}")));
    }
    Ok(Json(entries.iter().map(view).collect::<Result<_, _>>()?))
}

async fn verify(State(shared): State<Arc<Shared>>) -> Result<Json<VerifyReport>, ApiError> {
    let store = shared.ledger.store().clone();
    let started = Instant::now();
    let result = tokio::task::spawn_blocking(move || crate::ledger::verify::verify_store(&store))
        .await
        .map_err(|e| ApiError::internal(format!("verifier: {e}")))?;
    let millis = started.elapsed().as_millis() as u64;
    Ok(Json(match result {
        Ok(report) => VerifyReport {
            ok: true,
            own_entries: report.own_entries,
            foreign_entries: report.foreign_entries,
            head: (report.own_entries > 0).then(|| report.head.to_hex()),
            error: None,
            millis,
        },
        Err(e) => VerifyReport {
            ok: false,
            own_entries: 0,
            foreign_entries: 0,
            head: None,
            error: Some(e.to_string()),
            millis,
        },
    }))
}
