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

    let reopened = Ledger::open(dir.path(), key).unwrap();
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
    let chain = &ledger.store().trees.chain;
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
