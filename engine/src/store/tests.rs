use super::*;
use crate::state::{RunState, StepState};

fn record(id: &RunId) -> RunRecord {
    RunRecord {
        id: id.clone(),
        workflow: "w".into(),
        file: "w.yaml".into(),
        source: "apiVersion: kpilot/v1".into(),
        params: Default::default(),
        workdir: "/".into(),
        created_at: chrono::Utc::now(),
        updated_at: chrono::Utc::now(),
        state: RunState::Running,
        approvals: Default::default(),
    }
}

/// Commits one record of `step` in `state`.
fn commit_step(store: &mut RunStore, step: &StepId, state: StepState) {
    let mut rec = StepRecord::pending();
    rec.state = state;
    store
        .commit(Change {
            steps: vec![(step.clone(), InstanceId::global(), rec)],
            ..Change::default()
        })
        .expect("commit");
}

#[test]
fn commits_survive_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = StateDir::new(dir.path());
    let id = RunId::parse("r1").expect("id");
    let step = StepId::parse("a").expect("id");
    {
        let mut store = RunStore::create(&state, &record(&id)).expect("create");
        let mut rec = StepRecord::pending();
        rec.state = StepState::Succeeded;
        store
            .commit(Change {
                steps: vec![(step.clone(), InstanceId::global(), rec)],
                events: vec![EventKind::Retried { step: step.clone() }],
                outputs: vec![(
                    step.clone(),
                    InstanceId::global(),
                    1,
                    StoredOutput {
                        stdout: b"hi".to_vec(),
                        stderr: vec![],
                        exit_code: Some(0),
                    },
                )],
                ..Change::default()
            })
            .expect("commit");
    }
    let store = RunStore::open(&state, &id).expect("open");
    let steps = store.steps().expect("steps");
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].2.state, StepState::Succeeded);
    let journal = store.journal().expect("journal");
    assert_eq!(journal.len(), 2);
    assert_eq!(journal[1].seq, 1);
    let out = store
        .output(&step, &InstanceId::global(), 1)
        .expect("read")
        .expect("kept");
    assert_eq!(out.stdout, b"hi");
    assert_eq!(state.list().expect("list"), vec![id]);
}

#[test]
fn a_snapshot_left_part_written_by_a_kill_does_not_damage_the_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = StateDir::new(dir.path());
    let id = RunId::parse("r9").expect("id");
    let step = StepId::parse("a").expect("id");
    {
        let mut store = RunStore::create(&state, &record(&id)).expect("create");
        commit_step(&mut store, &step, StepState::Succeeded);
    }
    // What sled leaves when killed while it writes the snapshot it writes
    // on every open: a newer `.generating` file, cut short.
    let db = state.run_dir(&id).join("db");
    let unfinished = db.join("snap.7FFFFFFFFFFFFFFF.generating");
    std::fs::write(&unfinished, b"part of a snapshot").expect("write");
    let plain = sled::Config::new().path(&db).open();
    assert!(
        matches!(plain, Err(sled::Error::Corruption { .. })),
        "sled alone reads the unfinished snapshot: {:?}",
        plain.map(|_| ())
    );
    let store = RunStore::open(&state, &id).expect("open");
    let steps = store.steps().expect("steps");
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].2.state, StepState::Succeeded);
    assert!(!unfinished.exists());
}

#[test]
fn a_second_holder_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = StateDir::new(dir.path());
    let id = RunId::parse("r2").expect("id");
    let _held = RunStore::create(&state, &record(&id)).expect("create");
    match RunStore::open(&state, &id) {
        Err(StoreError::Busy { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
        other => panic!("expected Busy, got {other:?}"),
    }
}

#[test]
fn a_creation_cut_short_is_no_run_and_can_be_created_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = StateDir::new(dir.path());
    let id = RunId::parse("r3").expect("id");
    // What a crash between opening the database and writing the marker leaves.
    std::fs::create_dir_all(dir.path().join("runs/r3/db")).expect("mkdir");
    std::fs::write(dir.path().join("runs/r3/db/garbage"), b"torn").expect("write");
    assert!(matches!(
        RunStore::open(&state, &id),
        Err(StoreError::NoSuchRun { .. })
    ));
    assert!(state.list().expect("list").is_empty());
    drop(RunStore::create(&state, &record(&id)).expect("created afresh"));
    assert!(matches!(
        RunStore::create(&state, &record(&id)),
        Err(StoreError::RunExists { .. })
    ));
    assert_eq!(state.list().expect("list"), vec![id]);
}

#[tokio::test]
async fn a_fact_is_fetched_once_shared_while_held_and_read_again_from_the_store() {
    use std::sync::atomic::{AtomicU32, Ordering};
    let dir = tempfile::tempdir().expect("tempdir");
    let state = StateDir::new(dir.path());
    let id = RunId::parse("r-facts").expect("id");
    let store = RunStore::create(&state, &record(&id)).expect("create");
    let facts = store.facts();
    let fetched = AtomicU32::new(0);
    let fetch = || async {
        fetched.fetch_add(1, Ordering::SeqCst);
        Ok(serde_json::json!({"nodes": [1, 2, 3]}))
    };
    let first = facts
        .get_or_fetch("cluster.nodes", fetch)
        .await
        .expect("first");
    let second = facts
        .get_or_fetch("cluster.nodes", fetch)
        .await
        .expect("second");
    assert!(
        std::sync::Arc::ptr_eq(&first, &second),
        "one parsed copy while a check holds it"
    );
    let weak = std::sync::Arc::downgrade(&first);
    drop((first, second));
    assert!(
        weak.upgrade().is_none(),
        "nobody holds it: memory lets it go"
    );
    // The store answers the next check.
    let third = facts
        .get_or_fetch("cluster.nodes", fetch)
        .await
        .expect("third");
    assert_eq!(third["nodes"][2], 3);
    assert_eq!(fetched.load(Ordering::SeqCst), 1, "fetched once per run");
    // In memory only (an agent): kept, since it could not be read again.
    let memory = Facts::in_memory(id.clone());
    drop(memory.get_or_fetch("k", fetch).await.expect("kept"));
    memory.get_or_fetch("k", fetch).await.expect("again");
    assert_eq!(fetched.load(Ordering::SeqCst), 2);
}

#[test]
fn a_deleted_run_is_gone_and_a_held_one_is_not_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = StateDir::new(dir.path());
    let id = RunId::parse("old").expect("id");
    drop(RunStore::create(&state, &record(&id)).expect("create"));
    assert_eq!(state.list().expect("list"), vec![id.clone()]);
    state.delete(&id).expect("delete");
    assert!(state.list().expect("list").is_empty());
    assert!(!dir.path().join("runs").join("old").exists());
    // Deleting what is not there is not an error (a crash after the marker went).
    state.delete(&id).expect("delete again");
    let held = RunId::parse("held").expect("id");
    let store = RunStore::create(&state, &record(&held)).expect("create");
    assert!(matches!(state.delete(&held), Err(StoreError::Busy { .. })));
    drop(store);
    assert_eq!(state.list().expect("list"), vec![held]);
}

#[test]
fn a_change_larger_than_one_transaction_is_applied_whole_and_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = StateDir::new(dir.path());
    let id = RunId::parse("big").expect("id");
    let n = COMMIT_CHUNK * 2 + 7;
    let step = |i: usize| StepId::parse(&format!("s{i:05}")).expect("id");
    {
        let mut store = RunStore::create(&state, &record(&id)).expect("create");
        let mut change = Change::default();
        for i in 0..n {
            let mut rec = StepRecord::pending();
            rec.state = StepState::Running;
            change
                .steps
                .push((step(i), InstanceId::global(), rec.clone()));
            // The same step twice in one change: the later record wins, even
            // when the two fall in different transactions.
            rec.state = StepState::Succeeded;
            change.steps.push((step(i), InstanceId::global(), rec));
            change.events.push(EventKind::Retried { step: step(i) });
        }
        let mut ended = record(&id);
        ended.state = RunState::Succeeded;
        change.run = Some(ended);
        store.commit(change).expect("commit");
    }
    let store = RunStore::open(&state, &id).expect("open");
    let steps = store.steps().expect("steps");
    assert_eq!(steps.len(), n);
    assert!(steps
        .iter()
        .all(|(_, _, r)| r.state == StepState::Succeeded));
    let journal = store.journal().expect("journal");
    // RunCreated, then the change's events with consecutive numbers.
    assert_eq!(journal.len(), n + 1);
    assert!(journal.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    assert!(matches!(&journal[n].kind, EventKind::Retried { step: s } if *s == step(n - 1)));
    assert_eq!(store.run().expect("run").state, RunState::Succeeded);
}

#[test]
fn the_current_snapshot_is_never_older_than_the_last_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = StateDir::new(dir.path());
    let id = RunId::parse("fresh").expect("id");
    let step = StepId::parse("a").expect("id");
    {
        let mut store = RunStore::create(&state, &record(&id)).expect("create");
        commit_step(&mut store, &step, StepState::Running);
        store.write_snapshot().expect("snapshot");
        // A commit after the snapshot: the snapshot is stale from here on.
        commit_step(&mut store, &step, StepState::Succeeded);
        let now = store.current_snapshot().expect("read");
        assert_eq!(now.steps[0].2.state, StepState::Succeeded);
    }
    // Another process, later: the stale snapshot on disk is not what it reads.
    let store = RunStore::open_to_read(&state, &id).expect("open");
    assert_eq!(
        store.current_snapshot().expect("read").steps[0].2.state,
        StepState::Succeeded
    );
    assert_eq!(
        state.snapshot(&id).expect("file").expect("kept").steps[0]
            .2
            .state,
        StepState::Running,
        "the file on disk is the stale one"
    );
    drop(store);
    // Once the snapshot is written after the last commit, it is what is read.
    let store = RunStore::open(&state, &id).expect("open");
    store.write_snapshot().expect("snapshot");
    let fresh = store.current_snapshot().expect("read");
    assert_eq!(fresh.commits, Some(3));
    assert_eq!(fresh.steps[0].2.state, StepState::Succeeded);
}
