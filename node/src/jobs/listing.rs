//! `GET /v1/jobs` paging: newest first by (submission time, job id), a
//! cursor naming the last job of a page, and an id-prefix filter. Pure, so
//! the order and the cursors are tested without a node.

use std::collections::HashMap;

use fairgrid_sdk::jobs::{DEFAULT_JOBS_PER_PAGE, JobList, JobStatus, MAX_JOBS_PER_PAGE};

/// A parsed, checked `GET /v1/jobs` query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    limit: usize,
    /// Only jobs that sort strictly after this (older).
    before: Option<(u64, String)>,
    id_prefix: Option<String>,
}

impl ListQuery {
    /// Parses the query parameters; an error names the parameter and why.
    pub fn parse(params: &HashMap<String, String>) -> Result<ListQuery, String> {
        if let Some(unknown) = params
            .keys()
            .find(|k| !["limit", "before", "id_prefix"].contains(&k.as_str()))
        {
            return Err(format!(
                "unknown query parameter {unknown:?} (known: limit, before, id_prefix)"
            ));
        }
        let limit = match params.get("limit") {
            None => DEFAULT_JOBS_PER_PAGE,
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_JOBS_PER_PAGE).contains(n))
                .ok_or_else(|| format!("limit={v:?} is not a number in 1..={MAX_JOBS_PER_PAGE}"))?,
        };
        let before = params.get("before").map(|c| parse_cursor(c)).transpose()?;
        let id_prefix = match params.get("id_prefix") {
            None => None,
            Some(p) if (1..=64).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Some(p.to_ascii_lowercase())
            }
            Some(p) => {
                return Err(format!(
                    "id_prefix={:?} is not 1 to 64 hex digits",
                    p.chars().take(80).collect::<String>()
                ));
            }
        };
        Ok(ListQuery {
            limit: limit as usize,
            before,
            id_prefix,
        })
    }

    /// The page `all` (in any order) gives for this query.
    pub fn page(&self, mut all: Vec<JobStatus>) -> JobList {
        all.retain(|j| {
            self.id_prefix
                .as_deref()
                .is_none_or(|p| j.job_id.starts_with(p))
        });
        all.sort_by(|a, b| sort_key(b).cmp(&sort_key(a)));
        let start = match &self.before {
            None => 0,
            Some((at, id)) => all.partition_point(|j| sort_key(j) >= (*at, id.as_str())),
        };
        let mut jobs: Vec<JobStatus> = all.into_iter().skip(start).collect();
        let more = jobs.len() > self.limit;
        jobs.truncate(self.limit);
        let next = more.then(|| jobs.last().map(cursor)).flatten();
        JobList { jobs, next }
    }
}

fn sort_key(j: &JobStatus) -> (u64, &str) {
    (j.submitted_at_ms, j.job_id.as_str())
}

/// `<submitted_at_ms>-<job id>`: opaque to clients.
fn cursor(j: &JobStatus) -> String {
    format!("{}-{}", j.submitted_at_ms, j.job_id)
}

fn parse_cursor(text: &str) -> Result<(u64, String), String> {
    let bad = || {
        format!(
            "before={:?} is not a cursor from a previous page's \"next\"",
            text.chars().take(100).collect::<String>()
        )
    };
    let (at, id) = text.split_once('-').ok_or_else(bad)?;
    let at = at.parse::<u64>().map_err(|_| bad())?;
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    Ok((at, id.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fairgrid_sdk::jobs::JobState;

    fn job(n: u8, at: u64) -> JobStatus {
        JobStatus {
            job_id: format!("{n:02x}").repeat(32),
            name: format!("job {n}"),
            state: JobState::Finished,
            model: "mlp".into(),
            dataset: "d".into(),
            shards: 1,
            round: 1,
            rounds: 1,
            last_loss: None,
            last_accuracy: None,
            workers: 1,
            submitted_at_ms: at,
            updated_at_ms: at,
            eta_secs: None,
            error: None,
        }
    }

    fn query(pairs: &[(&str, &str)]) -> Result<ListQuery, String> {
        ListQuery::parse(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn pages_walk_every_job_once_newest_first() {
        // Two jobs share a submission time: the id breaks the tie.
        let all: Vec<JobStatus> = (0..7u8).map(|n| job(n, 100 + u64::from(n / 2))).collect();
        let mut seen = Vec::new();
        let mut before: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut pairs = vec![("limit", "3".to_string())];
            if let Some(c) = &before {
                pairs.push(("before", c.clone()));
            }
            let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let page = query(&pairs).unwrap().page(all.clone());
            pages += 1;
            assert!(page.jobs.len() <= 3);
            seen.extend(page.jobs.iter().map(|j| j.name.clone()));
            match page.next {
                Some(next) => before = Some(next),
                None => break,
            }
        }
        assert_eq!(pages, 3);
        let expected: Vec<String> = (0..7u8).rev().map(|n| format!("job {n}")).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn a_job_submitted_between_pages_does_not_shift_the_next_page() {
        let mut all: Vec<JobStatus> = (0..4u8).map(|n| job(n, 100 + u64::from(n))).collect();
        let first = query(&[("limit", "2")]).unwrap().page(all.clone());
        all.push(job(9, 500));
        let next = first.next.unwrap();
        let second = query(&[("limit", "2"), ("before", &next)])
            .unwrap()
            .page(all);
        let names: Vec<&str> = second.jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["job 1", "job 0"]);
        assert_eq!(second.next, None);
    }

    #[test]
    fn the_prefix_filters_and_the_default_limit_applies() {
        let all: Vec<JobStatus> = (0..=255u8).map(|n| job(n, u64::from(n))).collect();
        let page = query(&[("id_prefix", "AB")]).unwrap().page(all.clone());
        assert_eq!(page.jobs.len(), 1);
        assert_eq!(page.jobs[0].name, "job 171");
        let page = query(&[]).unwrap().page(all);
        assert_eq!(page.jobs.len(), DEFAULT_JOBS_PER_PAGE as usize);
        assert_eq!(page.jobs[0].name, "job 255");
        assert!(page.next.is_some());
    }

    #[test]
    fn bad_queries_are_refused_with_the_reason() {
        for (pairs, says) in [
            (vec![("limit", "0")], "limit=\"0\""),
            (vec![("limit", "501")], "1..=500"),
            (vec![("limit", "-1")], "limit"),
            (vec![("before", "12")], "not a cursor"),
            (vec![("before", "x-abc")], "not a cursor"),
            (
                vec![("before", &format!("1-{}", "g".repeat(64)))],
                "not a cursor",
            ),
            (vec![("id_prefix", "xyz")], "id_prefix"),
            (vec![("id_prefix", "")], "id_prefix"),
            (vec![("page", "2")], "unknown query parameter \"page\""),
        ] {
            let err = query(&pairs).unwrap_err();
            assert!(err.contains(says), "{pairs:?}: {err}");
        }
    }
}
