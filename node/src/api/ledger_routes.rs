//! Ledger and fairness routes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use fairgrid_protocol::Hash32;
use fairgrid_protocol::ledger::EntryKind;
use fairgrid_sdk::{FairnessReport, LedgerEntryView, LedgerPage, OwnerShareView, VerifyReport};

use super::error::ApiError;
use super::views;
use crate::ledger::StoredEntry;
use crate::state::Shared;

const MAX_PAGE: usize = 1000;

pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/ledger", get(page))
        .route("/v1/ledger/entries/{seq}", get(entry))
        .route("/v1/ledger/jobs/{job}", get(job))
        .route("/v1/ledger/verify", post(verify))
        .route("/v1/fairness", get(fairness))
}

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

fn job_id(text: &str) -> Result<Hash32, ApiError> {
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
    let entries: Vec<StoredEntry> = match params.get("kind") {
        Some(kind) => {
            let kind = EntryKind::ALL
                .into_iter()
                .find(|k| k.name() == kind)
                .ok_or_else(|| ApiError::bad_request(format!("unknown entry kind {kind:?}")))?;
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
    Ok(Json(LedgerPage {
        entries: views,
        next_after,
        total: store.len()?,
    }))
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

async fn fairness(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<FairnessReport>, ApiError> {
    let store = shared.ledger.store().clone();
    let job = params.get("job").map(|j| job_id(j)).transpose()?;
    let concentration = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        let entries = match &job {
            Some(id) => {
                let entries = store.entries_for_job(id)?;
                if entries.is_empty() {
                    return Err(ApiError::not_found(format!("unknown job id {id}")));
                }
                entries
            }
            None => {
                let mut all = Vec::new();
                for kind in [EntryKind::RoundCompleted, EntryKind::Credit] {
                    for seq in store.seqs_of_kind(kind, None, usize::MAX)? {
                        all.extend(store.get(seq)?);
                    }
                }
                all
            }
        };
        let bodies = entries
            .iter()
            .map(|e| e.entry().map(|e| e.body))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(crate::fairness::concentration(bodies.iter()))
    })
    .await
    .map_err(|e| ApiError::internal(format!("fairness: {e}")))??;
    Ok(Json(FairnessReport {
        job: params.get("job").cloned(),
        basis: concentration.basis.to_string(),
        total_units: concentration.total_units,
        owners: concentration
            .owners
            .into_iter()
            .map(|o| OwnerShareView {
                owner: o.owner,
                units: o.units,
                share_ppm: o.share_ppm,
            })
            .collect(),
        max_owner_share_ppm: concentration.max_owner_share_ppm,
        hhi: concentration.hhi,
        gini: concentration.gini,
        nakamoto_50: concentration.nakamoto_50,
        nakamoto_33: concentration.nakamoto_33,
        jain: concentration.jain,
    }))
}
