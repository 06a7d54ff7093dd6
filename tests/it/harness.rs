//! The harness's own promise: the comparison of a mirror with the truth (`support::truth`)
//! notices every kind of difference, so that a test ending "mirror matches truth" means it.

use crate::provider::spruce::{CLINIC, SpruceBed};
use crate::support::app::Sweep;
use crate::support::double::{Conv, Double, spawn_double_app};
use crate::support::truth::{Truth, TruthSource};
use crate::support::{StorePool, TestDb};

/// A changed column, a missing row, a row the provider does not know and a live
/// conversation marked deleted are each reported, naming the conversation.
#[tokio::test]
async fn every_kind_of_difference_from_the_simulator_is_reported() {
    let bed = SpruceBed::start(20, |_| {}).await;
    let app = bed.app(200).await;
    app.sync_caught_up(Sweep::IfDue).await;
    app.assert_mirror_matches_truth().await;
    let ids: Vec<String> = app.mirror(CLINIC).await.into_keys().collect();
    let pool = app.store().pool();

    edit(
        pool,
        "UPDATE conversations SET title = 'edited' WHERE conversation_id = ?",
        &ids[0],
    )
    .await;
    edit(
        pool,
        "DELETE FROM conversations WHERE conversation_id = ?",
        &ids[1],
    )
    .await;
    edit(
        pool,
        "UPDATE conversations SET deleted_at = last_seen_at WHERE conversation_id = ?",
        &ids[2],
    )
    .await;
    edit(
        pool,
        "UPDATE conversations SET conversation_id = 'unknown-' || conversation_id
         WHERE conversation_id = ?",
        &ids[3],
    )
    .await;

    let truth = Truth::simulator(&bed.sim, vec![TruthSource::spruce(&bed.sim, 0, CLINIC)]);
    let problems = truth.differences(pool).await;
    let about = |id: &str| problems.iter().filter(|p| p.contains(id)).count();
    assert_eq!(problems.len(), 5, "{problems:#?}");
    assert!(
        problems
            .iter()
            .any(|p| p.contains(&ids[0]) && p.contains("Title"))
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains(&ids[1]) && p.contains("missing"))
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains(&ids[2]) && p.contains("Deleted"))
    );
    // The renamed row is both missing under its id and unknown under its new one.
    assert_eq!(about(&ids[3]), 2, "{problems:#?}");
    assert!(
        problems
            .iter()
            .any(|p| p.contains("unknown-") && p.contains("unknown to"))
    );
}

/// Against the engine double: a row the double still lists must be live and equal; one it
/// forgot may stay only if marked deleted.
#[tokio::test]
async fn differences_from_the_double_are_reported() {
    let double = Double::start().await;
    let at = convsync::time::Timestamp::now();
    double.upsert((0..3).map(|i| Conv {
        id: format!("c{i}"),
        updated_at: at,
        name: format!("n{i}"),
        hidden: false,
    }));
    let db = TestDb::new();
    let app = spawn_double_app(&double, &db, 50, false).await;
    app.sync_caught_up(Sweep::IfDue).await;
    app.assert_mirror_matches_truth().await;
    let truth = Truth::double(&double, "double");

    double.remove("c0");
    let problems = truth.differences(app.store().pool()).await;
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(
        problems[0].contains("c0") && problems[0].contains("unknown"),
        "{problems:?}"
    );

    sqlx::query("UPDATE conversations SET deleted_at = last_seen_at WHERE conversation_id = 'c0'")
        .execute(app.store().pool())
        .await
        .unwrap();
    sqlx::query("UPDATE conversations SET title = 'changed' WHERE conversation_id = 'c1'")
        .execute(app.store().pool())
        .await
        .unwrap();
    let problems = truth.differences(app.store().pool()).await;
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(
        problems[0].contains("c1") && problems[0].contains("Title"),
        "{problems:?}"
    );
}

/// Runs `sql` on the mirror with `id` bound.
async fn edit(pool: &sqlx::SqlitePool, sql: &'static str, id: &str) {
    sqlx::query(sql).bind(id).execute(pool).await.unwrap();
}
