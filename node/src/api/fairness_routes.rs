//! Fairness routes: each owner's share of the trained work, now and over
//! time, over the whole ledger or one job.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use fairgrid_protocol::Hash32;
use fairgrid_protocol::ledger::{EntryBody, EntryKind, LedgerEntry};
use fairgrid_sdk::{FairnessHistory, FairnessPoint, FairnessReport, OwnerShareView};

use super::error::ApiError;
use super::ledger_routes::job_id;
use crate::fairness::history::{RoundEntry, history};
use crate::ledger::{LedgerStore, StoredEntry};
use crate::state::Shared;

/// Points of a fairness history.
const MAX_HISTORY_POINTS: usize = 300;

pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/fairness", get(fairness))
        .route("/v1/fairness/history", get(fairness_history))
}

/// The entries a fairness figure is computed from: a job's (own and
/// foreign; `404` for a job the ledger does not know), or the own entries
/// of `kinds` over the whole ledger.
fn work_entries(
    store: &LedgerStore,
    job: Option<&Hash32>,
    kinds: &[EntryKind],
) -> Result<Vec<LedgerEntry>, ApiError> {
    let stored = match job {
        Some(id) => {
            let entries = store.entries_for_job(id)?;
            if entries.is_empty() {
                return Err(ApiError::not_found(format!("unknown job id {id}")));
            }
            entries
        }
        None => {
            let mut all = Vec::new();
            for kind in kinds {
                for seq in store.seqs_of_kind(*kind, None, usize::MAX)? {
                    all.extend(store.get(seq)?);
                }
            }
            all
        }
    };
    Ok(stored
        .iter()
        .map(StoredEntry::entry)
        .collect::<Result<Vec<_>, _>>()?)
}

async fn fairness(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<FairnessReport>, ApiError> {
    let store = shared.ledger.store().clone();
    let job = params.get("job").map(|j| job_id(j)).transpose()?;
    let concentration = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        let entries = work_entries(
            &store,
            job.as_ref(),
            &[EntryKind::RoundCompleted, EntryKind::Credit],
        )?;
        Ok(crate::fairness::concentration(
            entries.iter().map(|e| &e.body),
        ))
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

async fn fairness_history(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<FairnessHistory>, ApiError> {
    let store = shared.ledger.store().clone();
    let job = params.get("job").map(|j| job_id(j)).transpose()?;
    let beta_ppm = shared.config.jobs.beta_ppm;
    let report = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        let entries = work_entries(&store, job.as_ref(), &[EntryKind::RoundCompleted])?;
        // A job is held to its alpha, recorded when it was submitted; the
        // whole ledger to this node's network cap.
        let cap_ppm = entries
            .iter()
            .find_map(|e| match &e.body {
                EntryBody::JobSubmitted { alpha_ppm, .. } => Some(*alpha_ppm),
                _ => None,
            })
            .filter(|_| job.is_some())
            .unwrap_or(beta_ppm);
        let h = history(
            entries.iter().map(|e| RoundEntry {
                seq: e.seq,
                author: e.author,
                timestamp: e.timestamp,
                body: &e.body,
            }),
            MAX_HISTORY_POINTS,
        );
        Ok(FairnessHistory {
            job: job.map(|j| j.to_hex()),
            cap_ppm,
            owners: h.owners.iter().map(ToString::to_string).collect(),
            points: h
                .points
                .into_iter()
                .map(|p| FairnessPoint {
                    seq: p.seq,
                    author: p.author.to_string(),
                    timestamp: p.timestamp,
                    total_units: p.total_units,
                    share_ppm: p.share_ppm,
                })
                .collect(),
        })
    })
    .await
    .map_err(|e| ApiError::internal(format!("fairness history: {e}")))??;
    Ok(Json(report))
}
