use fairgrid_protocol::ledger::{EntryBody, EntryKind, LedgerEntry};
use fairgrid_protocol::{Hash32, Keypair, Signed};

use super::*;

fn credit(job: u8, amount: u64) -> EntryBody {
    EntryBody::Credit {
        job_id: Hash32::of(&[job]),
        owner: Keypair::from_seed(&[job]).owner_id(),
        amount,
        shards: 1,
        clearing_price: 1,
        allocation: Hash32::ZERO,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_form_one_valid_chain_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let key = Keypair::from_seed(b"ledger-node");
    let ledger = Ledger::open(dir.path(), key.clone()).unwrap();
    let mut tasks = Vec::new();
    for t in 0..8u8 {
        let ledger = ledger.clone();
        tasks.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            for i in 0..50 {
                acks.push(ledger.append(credit(t, i)).await.unwrap());
            }
            acks
        }));
    }
    let mut acks = Vec::new();
    for t in tasks {
        acks.extend(t.await.unwrap());
    }
    acks.sort_by_key(|a| a.seq);
    assert_eq!(
        acks.iter().map(|a| a.seq).collect::<Vec<_>>(),
        (0..400).collect::<Vec<_>>()
    );
    let report = verify::verify_store(ledger.store()).unwrap();
    assert_eq!(report.own_entries, 400);
    assert_eq!(report.head, acks.last().unwrap().id);
    assert_eq!(
        ledger
            .store()
            .entries_for_job(&Hash32::of(&[3]))
            .unwrap()
            .len(),
        50
    );
    assert_eq!(
        ledger
            .store()
            .entries_for_owner(&Keypair::from_seed(&[5]).owner_id())
            .unwrap()
            .len(),
        50
    );
    assert_eq!(
        ledger
            .store()
            .seqs_of_kind(EntryKind::Credit, None, 1000)
            .unwrap()
            .len(),
        400
    );
    ledger.close_async().await.unwrap();
    drop(ledger);

    let reopened = reopen(dir.path(), &key);
    let next = reopened.append(credit(9, 9)).await.unwrap();
    assert_eq!(next.seq, 400);
    assert_eq!(
        verify::verify_store(reopened.store()).unwrap().own_entries,
        401
    );
    reopened.close_async().await.unwrap();
    drop(reopened);

    let err = Ledger::open(dir.path(), Keypair::from_seed(b"someone else"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("belongs to node"), "{err}");
}

#[tokio::test]
async fn foreign_entries_are_checked_kept_apart_and_equivocation_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path(), Keypair::from_seed(b"me")).unwrap();
    let other = Keypair::from_seed(b"other");
    let first = LedgerEntry::sign_next(&other, None, 5, credit(1, 10));
    let stored = ledger.store_foreign(first.clone()).await.unwrap();
    assert!(!stored.already_held);
    assert!(
        ledger
            .store_foreign(first.clone())
            .await
            .unwrap()
            .already_held
    );

    let twin = LedgerEntry::sign_next(&other, None, 5, credit(1, 11));
    let err = ledger.store_foreign(twin).await.unwrap_err();
    assert!(
        matches!(err, NodeError::Equivocation { seq: 0, .. }),
        "{err}"
    );

    let mut forged = first.clone();
    forged.signature.0[0] ^= 1;
    assert!(ledger.store_foreign(forged).await.is_err());

    let mine = LedgerEntry::sign_next(&Keypair::from_seed(b"me"), None, 5, credit(1, 1));
    assert!(ledger.store_foreign(mine).await.is_err());

    assert_eq!(ledger.store().len().unwrap(), 0, "own chain untouched");
    let for_job = ledger.store().entries_for_job(&Hash32::of(&[1])).unwrap();
    assert_eq!(for_job.len(), 1);
    assert!(!for_job[0].own);
    let report = verify::verify_store(ledger.store()).unwrap();
    assert_eq!(report.foreign_entries, 1);

    let wrong_author: Signed<LedgerEntry> = Signed::sign(
        &Keypair::from_seed(b"third"),
        &first.verify_and_decode().unwrap().1,
    );
    assert!(ledger.store_foreign(wrong_author).await.is_err());
}

#[tokio::test]
async fn verify_names_the_first_tampered_or_missing_entry() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path(), Keypair::from_seed(b"tamper")).unwrap();
    for i in 0..30 {
        ledger.append(credit(1, i)).await.unwrap();
    }
    let chain = &ledger.store().handles().unwrap().trees.chain;
    let key = super::store::seq_key(17);
    let mut row = chain.get(key).unwrap().unwrap().to_vec();
    let original = row.clone();
    let last = row.len() - 1;
    row[last] ^= 1; // inside the signature
    chain.insert(key, row).unwrap();
    let err = verify::verify_store(ledger.store())
        .unwrap_err()
        .to_string();
    assert!(err.contains("seq 17"), "{err}");

    chain.insert(key, original).unwrap();
    verify::verify_store(ledger.store()).unwrap();
    chain.remove(super::store::seq_key(5)).unwrap();
    assert!(
        verify::verify_store(ledger.store()).is_err(),
        "a gap is found"
    );
}

#[tokio::test]
async fn indexes_that_lag_the_chain_are_caught_up_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let key = Keypair::from_seed(b"lagging");
    let ledger = Ledger::open(dir.path(), key.clone()).unwrap();
    for i in 0..40 {
        ledger.append(credit((i % 4) as u8, i)).await.unwrap();
    }
    // What a crash between a group's chain rows and its index rows leaves:
    // the last 15 entries' index rows and the watermark are missing.
    let trees = ledger.store().handles().unwrap().trees.clone();
    for seq in 25..40u64 {
        let key = store::seq_key(seq);
        let entry = ledger.store().get(seq).unwrap().unwrap().entry().unwrap();
        trees.kind_tree(EntryKind::Credit).remove(key).unwrap();
        let job = entry.body.job_id().unwrap();
        trees
            .by_job
            .remove(store::concat_key(&[&job.0, &key]))
            .unwrap();
        for owner in entry.body.owners() {
            trees
                .by_owner
                .remove(store::concat_key(&[&owner.0.0, &key]))
                .unwrap();
        }
    }
    trees
        .meta
        .insert(store::META_INDEXED, &store::seq_key(24))
        .unwrap();
    let credits = |l: &Ledger| {
        l.store()
            .seqs_of_kind(EntryKind::Credit, None, 1000)
            .unwrap()
            .len()
    };
    assert_eq!(credits(&ledger), 25);
    ledger.close_async().await.unwrap();
    // The trees hold the database open (and locked) too.
    drop(trees);
    drop(ledger);

    let reopened = reopen(dir.path(), &key);
    assert_eq!(credits(&reopened), 40);
    let job = Hash32::of(&[1]);
    assert_eq!(reopened.store().entries_for_job(&job).unwrap().len(), 10);
    let owner = Keypair::from_seed(&[3]).owner_id();
    assert_eq!(
        reopened.store().entries_for_owner(&owner).unwrap().len(),
        10
    );

    // A watermark past the chain (which sled should never produce) makes
    // the indexes be rebuilt from scratch rather than trusted.
    reopened
        .store()
        .handles()
        .unwrap()
        .trees
        .meta
        .insert(store::META_INDEXED, &store::seq_key(99))
        .unwrap();
    reopened
        .store()
        .handles()
        .unwrap()
        .trees
        .kind_tree(EntryKind::Verification)
        .insert(store::seq_key(77), &[])
        .unwrap();
    reopened.close_async().await.unwrap();
    drop(reopened);
    let rebuilt = reopen(dir.path(), &key);
    assert_eq!(credits(&rebuilt), 40);
    assert!(
        rebuilt
            .store()
            .seqs_of_kind(EntryKind::Verification, None, 10)
            .unwrap()
            .is_empty()
    );
    rebuilt.close_async().await.unwrap();
}

#[tokio::test]
async fn a_ledger_in_the_old_format_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let key = Keypair::from_seed(b"old");
    let ledger = Ledger::open(dir.path(), key.clone()).unwrap();
    ledger.append(credit(1, 1)).await.unwrap();
    // Format 1 had no marker.
    ledger
        .store()
        .handles()
        .unwrap()
        .trees
        .meta
        .remove(store::META_FORMAT)
        .unwrap();
    ledger.close_async().await.unwrap();
    drop(ledger);
    for err in [
        Ledger::open(dir.path(), key.clone()).err().unwrap(),
        LedgerStore::open(dir.path()).err().unwrap(),
    ] {
        let text = err.to_string();
        assert!(text.contains("format 1"), "{text}");
    }
}

/// The packed index rows answer like a plain per-entry index: entries
/// are committed in groups of varying sizes (as group commit does) and
/// every query is compared with a model built from the bodies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grouped_index_rows_answer_like_a_per_entry_index() {
    let dir = tempfile::tempdir().unwrap();
    let key = Keypair::from_seed(b"grouped");
    let ledger = Ledger::open(dir.path(), key.clone()).unwrap();
    let body = |i: u64| {
        if i.is_multiple_of(5) {
            EntryBody::Verification {
                job_id: Hash32::of(&[(i % 3) as u8]),
                round: i as u32,
                node: key.node_id(),
                passed: true,
                detail: String::new(),
            }
        } else {
            credit((i % 3) as u8, i)
        }
    };
    // Bursts of concurrent appends make groups of many entries.
    let mut next = 0u64;
    for burst in [1u64, 7, 64, 3, 200, 25] {
        let tasks: Vec<_> = (next..next + burst)
            .map(|i| {
                let ledger = ledger.clone();
                let b = body(i);
                tokio::spawn(async move { ledger.append(b).await.unwrap() })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        next += burst;
    }
    assert!(
        ledger.group_commits() < next,
        "some groups held several entries"
    );
    let store = ledger.store();
    let bodies: Vec<(u64, EntryBody)> = store
        .iter_own()
        .map(|s| {
            let s = s.unwrap();
            (s.seq, s.entry().unwrap().body)
        })
        .collect();
    assert_eq!(bodies.len() as u64, next);
    for kind in [EntryKind::Credit, EntryKind::Verification] {
        let model: Vec<u64> = bodies
            .iter()
            .filter(|(_, b)| b.kind() == kind)
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(store.seqs_of_kind(kind, None, usize::MAX).unwrap(), model);
        // Paging from every position, in pages of 7.
        for after in [None, Some(0), Some(5), Some(70), Some(150), Some(299)] {
            let expected: Vec<u64> = model
                .iter()
                .copied()
                .filter(|s| after.is_none_or(|a| *s > a))
                .take(7)
                .collect();
            assert_eq!(store.seqs_of_kind(kind, after, 7).unwrap(), expected);
        }
        let counted = store
            .kind_counts()
            .unwrap()
            .into_iter()
            .find(|(k, _)| *k == kind)
            .unwrap()
            .1;
        assert_eq!(counted, model.len());
    }
    for job in 0..3u8 {
        let model: Vec<u64> = bodies
            .iter()
            .filter(|(_, b)| b.job_id() == Some(Hash32::of(&[job])))
            .map(|(s, _)| *s)
            .collect();
        let found: Vec<u64> = store
            .entries_for_job(&Hash32::of(&[job]))
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(found, model);
        let owner = Keypair::from_seed(&[job]).owner_id();
        let model: Vec<u64> = bodies
            .iter()
            .filter(|(_, b)| b.owners().contains(&owner))
            .map(|(s, _)| *s)
            .collect();
        let found: Vec<u64> = store
            .entries_for_owner(&owner)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(found, model);
    }
    ledger.close_async().await.unwrap();
}

/// A crash inside a group commit can leave the group's chain rows and
/// only some of its index rows (no watermark). Reopening rewrites those
/// rows under the same keys: every query answers each entry once.
#[tokio::test]
async fn a_group_whose_index_rows_were_cut_short_is_indexed_once_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let key = Keypair::from_seed(b"cut short");
    let ledger = Ledger::open(dir.path(), key.clone()).unwrap();
    for i in 0..10 {
        ledger.append(credit(1, i)).await.unwrap();
    }
    // The crashed group: entries 10..20, chain rows written...
    let trees = ledger.store().handles().unwrap().trees.clone();
    let mut prev = (9, ledger.store().get(9).unwrap().unwrap().link());
    let mut packed = Vec::new();
    for seq in 10..20u64 {
        let signed = LedgerEntry::sign_next(&key, Some(prev), 5, credit(1, seq));
        prev = (seq, LedgerEntry::link_of(&signed));
        trees
            .chain
            .insert(store::seq_key(seq), signed.to_bytes())
            .unwrap();
        packed.extend(store::seq_key(seq));
    }
    // ...then its kind and job rows, but not its owner row nor the
    // watermark, which still names entry 9.
    trees
        .kind_tree(EntryKind::Credit)
        .insert(store::seq_key(10), packed.clone())
        .unwrap();
    let job = Hash32::of(&[1]);
    trees
        .by_job
        .insert(store::concat_key(&[&job.0, &store::seq_key(10)]), packed)
        .unwrap();
    let owner = Keypair::from_seed(&[1]).owner_id();
    assert_eq!(ledger.store().entries_for_owner(&owner).unwrap().len(), 10);
    ledger.close_async().await.unwrap();
    drop(trees);
    drop(ledger);

    let reopened = reopen(dir.path(), &key);
    let next = reopened.append(credit(1, 20)).await.unwrap();
    assert_eq!(next.seq, 20);
    let store = reopened.store();
    let all: Vec<u64> = (0..21).collect();
    assert_eq!(
        store
            .seqs_of_kind(EntryKind::Credit, None, usize::MAX)
            .unwrap(),
        all
    );
    let seqs = |entries: Vec<StoredEntry>| entries.iter().map(|e| e.seq).collect::<Vec<_>>();
    assert_eq!(seqs(store.entries_for_job(&job).unwrap()), all);
    assert_eq!(seqs(store.entries_for_owner(&owner).unwrap()), all);
    let credits = store
        .kind_counts()
        .unwrap()
        .into_iter()
        .find(|(k, _)| *k == EntryKind::Credit)
        .unwrap()
        .1;
    assert_eq!(credits, 21);
    verify::verify_store(store).unwrap();
    reopened.close_async().await.unwrap();
}

/// Opens a ledger that was just closed in this process. Sled's background
/// threads let go of the directory's lock a moment after the last handle
/// is dropped; a restarted node (a new process) never sees this.
fn reopen(dir: &std::path::Path, key: &Keypair) -> Ledger {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Ledger::open(dir, key.clone()) {
            Ok(ledger) => return ledger,
            Err(e) if e.to_string().contains("locked") && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("reopening the ledger: {e}"),
        }
    }
}
