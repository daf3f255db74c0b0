//! The worker's app cache: a loaded app is kept, an unknown one never is.

use std::time::Duration;

use otp_courier::domain::AppId;
use otp_courier::tenancy::apps::{self, Cache, NewApp};
use sqlx::PgPool;

use crate::harness::wait_until;

async fn name(cache: &Cache, id: &AppId) -> Option<String> {
    let app = cache.get(id).await.expect("batch").expect("readable app");
    app.map(|app| app.name.clone())
}

#[sqlx::test]
async fn a_loaded_app_is_kept_for_its_time_then_loaded_again_and_an_unknown_app_is_never_kept(pool: PgPool) {
    let id = AppId::parse("shop").expect("id");
    let kept = Cache::spawn(pool.clone(), Duration::from_secs(3600));
    assert_eq!(name(&kept, &id).await, None, "no such app yet");

    let new = NewApp {
        id: "shop".into(),
        name: "Shop".into(),
        ..Default::default()
    };
    apps::create(&pool, &new).await.expect("create");
    assert_eq!(
        name(&kept, &id).await.as_deref(),
        Some("Shop"),
        "a new app is seen at once"
    );

    sqlx::query("update apps set name = 'Renamed' where id = 'shop'")
        .execute(&pool)
        .await
        .expect("edit");
    assert_eq!(name(&kept, &id).await.as_deref(), Some("Shop"), "kept for its time");
    let brief = Cache::spawn(pool.clone(), Duration::from_secs(1));
    assert_eq!(name(&brief, &id).await.as_deref(), Some("Renamed"));
    sqlx::query("update apps set name = 'Later' where id = 'shop'")
        .execute(&pool)
        .await
        .expect("edit");
    wait_until(
        "the edit is seen once its time is up",
        Duration::from_secs(5),
        || async { name(&brief, &id).await.as_deref() == Some("Later") },
    )
    .await;
    let uncached = Cache::spawn(pool.clone(), Duration::ZERO);
    assert_eq!(name(&uncached, &id).await.as_deref(), Some("Later"));
    sqlx::query("update apps set name = 'Again' where id = 'shop'")
        .execute(&pool)
        .await
        .expect("edit");
    assert_eq!(
        name(&uncached, &id).await.as_deref(),
        Some("Again"),
        "zero keeps nothing"
    );
}
