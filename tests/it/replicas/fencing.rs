//! The lease table and the fence through the neutral store: a claim raises the epoch, a
//! write under a stale epoch commits nothing, expiry follows the database's clock, and a
//! released lease hands its rate-limit state to the next owner.

use std::time::Duration;

use convsync::record::ConversationRecord;
use convsync::store::{CursorState, Fence, PageWrite, ReplicaName, Store, StoreError};
use convsync::time::Timestamp;
use serde_json::value::RawValue;

use crate::support::TestDb;
use crate::support::stores::{Backend, MirrorSql};

const SCOPE: &str = "spruce:entity_A";
const SOURCE: &str = "clinic";
const HOUR: Duration = Duration::from_secs(3600);

fn replica(name: &str) -> ReplicaName {
    ReplicaName::new(name).unwrap()
}

fn record(id: &str) -> ConversationRecord {
    let raw = serde_json::json!({ "id": id });
    let mut record = ConversationRecord::new(id, RawValue::from_string(raw.to_string()).unwrap());
    record.last_activity_at = Some(Timestamp::now());
    record.active = Some(true);
    record
}

fn page(run_id: i64, records: &[ConversationRecord]) -> PageWrite<'_> {
    PageWrite {
        source: SOURCE,
        provider: "spruce",
        account: "entity_A",
        walk: "delta",
        run_id,
        records,
        rejected: &[],
        follow_ups: &[],
        touch_seen_before: None,
        insert_first: false,
    }
}

fn cursor(position: u32) -> CursorState {
    CursorState::encode(&serde_json::json!({ "position": position })).unwrap()
}

/// A PostgreSQL mirror with the scope registered.
async fn open() -> (TestDb, Store) {
    let db = TestDb::on(Backend::Postgres).await;
    let store = db.open().await;
    store
        .register_scopes(&[(SCOPE.to_owned(), vec![SOURCE.to_owned()])])
        .await
        .unwrap();
    (db, store)
}

/// Makes the scope's lease expire now by the database's clock, as if its lifetime had
/// passed on the server.
async fn expire_now(store: &Store) {
    sqlx::query("UPDATE leases SET expires_at = clock_timestamp() - interval '1 second'")
        .execute(store.as_postgres().unwrap().pool())
        .await
        .unwrap();
}

/// The classic fencing case: a replica whose lease moved on (it paused past the lease's
/// lifetime) wakes and writes a page: the write fails as LeaseLost and nothing of it, nor
/// its cursor, is written; the new owner writes as usual.
#[tokio::test]
async fn a_stale_epoch_cannot_commit() {
    let (_db, store) = open().await;
    let first = store
        .claim(&replica("r1"), &[SCOPE.to_owned()], 1, HOUR)
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].epoch, 1);
    let stale = store
        .fenced(Fence {
            scope: SCOPE.into(),
            owner: replica("r1"),
            epoch: 1,
        })
        .unwrap();
    let stale_run = stale.begin_run(SOURCE).await.unwrap();

    // r1 stops answering; its lease expires on the server and r2 takes the scope over.
    expire_now(&store).await;
    let second = store
        .claim(&replica("r2"), &[SCOPE.to_owned()], 1, HOUR)
        .await
        .unwrap();
    assert_eq!(second[0].epoch, 2, "every claim raises the epoch");

    let records = [record("a"), record("b")];
    let lost = stale
        .apply_page(&page(stale_run, &records), &cursor(1))
        .await
        .unwrap_err();
    assert!(
        matches!(&lost, StoreError::LeaseLost { scope } if scope == SCOPE),
        "{lost:?}"
    );
    assert_eq!(
        store
            .sql_value::<i64>("SELECT COUNT(*) FROM conversations")
            .await,
        0
    );
    assert_eq!(
        store.sql_value::<i64>("SELECT COUNT(*) FROM cursors").await,
        0
    );
    assert!(matches!(
        stale.save_cursor(SOURCE, "delta", &cursor(2)).await,
        Err(StoreError::LeaseLost { .. })
    ));
    assert!(matches!(
        stale.begin_run(SOURCE).await,
        Err(StoreError::LeaseLost { .. })
    ));
    // The stale replica's run was closed by the claim that took its scope.
    let outcome: String = store
        .sql_value(&format!(
            "SELECT outcome FROM sync_runs WHERE id = {stale_run}"
        ))
        .await;
    assert_eq!(outcome, "interrupted");

    let owner = store
        .fenced(Fence {
            scope: SCOPE.into(),
            owner: replica("r2"),
            epoch: 2,
        })
        .unwrap();
    let run = owner.begin_run(SOURCE).await.unwrap();
    owner
        .apply_page(&page(run, &records), &cursor(1))
        .await
        .unwrap();
    assert_eq!(
        store
            .sql_value::<i64>("SELECT COUNT(*) FROM conversations")
            .await,
        2
    );
    let (replica_name, epoch, committed): (String, i64, bool) = sqlx::query_as(
        "SELECT replica, epoch, last_commit_at >= started_at FROM sync_runs WHERE id = $1",
    )
    .bind(run)
    .fetch_one(store.as_postgres().unwrap().pool())
    .await
    .unwrap();
    assert_eq!((replica_name.as_str(), epoch, committed), ("r2", 2, true));
}

/// A lease is claimable only once the database's clock passes its expiry: not while it
/// lasts, whatever the claimant's own clock says; renewals extend it, and only for the
/// owner at its epoch.
#[tokio::test]
async fn expiry_is_by_the_database_clock() {
    let (_db, store) = open().await;
    let wanted = [SCOPE.to_owned()];
    store.claim(&replica("r1"), &wanted, 1, HOUR).await.unwrap();
    let (lifetime,): (f64,) =
        sqlx::query_as("SELECT extract(epoch FROM expires_at - acquired_at)::float8 FROM leases")
            .fetch_one(store.as_postgres().unwrap().pool())
            .await
            .unwrap();
    assert!((lifetime - 3600.0).abs() < 1.0, "{lifetime}");
    assert!(
        store
            .claim(&replica("r2"), &wanted, 1, HOUR)
            .await
            .unwrap()
            .is_empty(),
        "a live lease is not claimable"
    );

    let fence = Fence {
        scope: SCOPE.into(),
        owner: replica("r1"),
        epoch: 1,
    };
    let impostor = Fence {
        owner: replica("r2"),
        ..fence.clone()
    };
    assert_eq!(
        store
            .renew(&replica("r2"), &[impostor], HOUR)
            .await
            .unwrap(),
        Vec::<String>::new(),
        "only the owner renews"
    );
    expire_now(&store).await;
    assert_eq!(
        store
            .renew(&replica("r1"), std::slice::from_ref(&fence), HOUR)
            .await
            .unwrap(),
        vec![SCOPE.to_owned()],
        "an expired lease nobody claimed is still its owner's to renew"
    );
    assert!(
        store
            .claim(&replica("r2"), &wanted, 1, HOUR)
            .await
            .unwrap()
            .is_empty()
    );

    expire_now(&store).await;
    let taken = store.claim(&replica("r2"), &wanted, 1, HOUR).await.unwrap();
    assert_eq!(taken[0].epoch, 2);
    assert!(
        store
            .renew(&replica("r1"), &[fence], HOUR)
            .await
            .unwrap()
            .is_empty(),
        "a lease taken over is not renewed"
    );
    let leases = store.lease_owners().await.unwrap();
    assert_eq!(leases[0].owner.as_deref(), Some("r2"));
    assert_eq!(leases[0].sources, vec![SOURCE.to_owned()]);
    assert!(!leases[0].expired);
}

/// A release leaves the scope unowned at once, with the budget's rate-limit state for the
/// next owner's claim (as does a renewal, for an owner that dies); a release or a state
/// under a stale fence changes nothing.
#[tokio::test]
async fn a_release_hands_the_rate_limit_state_over() {
    let (_db, store) = open().await;
    let wanted = [SCOPE.to_owned()];
    store.claim(&replica("r1"), &wanted, 1, HOUR).await.unwrap();
    let fence = Fence {
        scope: SCOPE.into(),
        owner: replica("r1"),
        epoch: 1,
    };
    let state = serde_json::json!({ "paused_until": "2099-01-01T00:00:00Z", "requests_left": 3 });
    store
        .release(
            &Fence {
                epoch: 7,
                ..fence.clone()
            },
            Some(&state),
        )
        .await
        .unwrap();
    assert_eq!(
        store.lease_owners().await.unwrap()[0].owner.as_deref(),
        Some("r1"),
        "a stale fence releases nothing"
    );
    store.release(&fence, Some(&state)).await.unwrap();
    assert_eq!(store.lease_owners().await.unwrap()[0].owner, None);

    let next = store.claim(&replica("r2"), &wanted, 1, HOUR).await.unwrap();
    assert_eq!(next[0].epoch, 2);
    assert_eq!(next[0].rate_limit.as_ref(), Some(&state));

    // A replica that dies without releasing leaves the state it stored on renewal.
    let r2 = Fence {
        scope: SCOPE.into(),
        owner: replica("r2"),
        epoch: 2,
    };
    let renewed_state = serde_json::json!({ "requests_left": 1 });
    store
        .store_rate_limits(&[
            (r2, renewed_state.clone()),
            (fence, serde_json::json!({ "requests_left": 99 })),
        ])
        .await
        .unwrap();
    expire_now(&store).await;
    let after_crash = store.claim(&replica("r3"), &wanted, 1, HOUR).await.unwrap();
    assert_eq!(
        after_crash[0].rate_limit.as_ref(),
        Some(&renewed_state),
        "only the owner's state is stored"
    );
}

/// Replicas count as live while their heartbeat is younger than a lease's lifetime; one
/// that leaves stops counting at once.
#[tokio::test]
async fn live_replicas_are_those_with_a_recent_heartbeat() {
    let (_db, store) = open().await;
    store.heartbeat(&replica("r1")).await.unwrap();
    store.heartbeat(&replica("r2")).await.unwrap();
    store.heartbeat(&replica("r2")).await.unwrap();
    assert_eq!(
        store.live_replicas(HOUR).await.unwrap(),
        vec![replica("r1"), replica("r2")]
    );
    sqlx::query("UPDATE replicas SET last_seen_at = clock_timestamp() - interval '2 hours' WHERE name = 'r1'")
        .execute(store.as_postgres().unwrap().pool())
        .await
        .unwrap();
    assert_eq!(
        store.live_replicas(HOUR).await.unwrap(),
        vec![replica("r2")]
    );
    store.leave(&replica("r2")).await.unwrap();
    assert!(store.live_replicas(HOUR).await.unwrap().is_empty());
}

/// SQLite keeps to one daemon with its lock file: it has no leases to offer.
#[tokio::test]
async fn sqlite_has_no_leases() {
    let db = TestDb::new();
    let store = db.open().await;
    assert!(matches!(
        store.lease_owners().await,
        Err(StoreError::LeasesUnsupported { backend: "sqlite" })
    ));
    assert!(
        store
            .fenced(Fence {
                scope: SCOPE.into(),
                owner: replica("r1"),
                epoch: 1
            })
            .is_err()
    );
    // Its runs carry the same columns, empty of any lease.
    let run = store.begin_run(SOURCE).await.unwrap();
    let records = [record("a")];
    store
        .apply_page(&page(run, &records), &cursor(1))
        .await
        .unwrap();
    let unleased: i64 = store
        .sql_value(&format!(
            "SELECT COUNT(*) FROM sync_runs WHERE id = {run} AND replica IS NULL AND epoch IS NULL AND last_commit_at IS NOT NULL"
        ))
        .await;
    assert_eq!(unleased, 1);
}
