//! The worker's app cache: a loaded app is kept, an unknown one never is.

use std::time::Duration;

use otp_courier::apps::{self, Cache, NewApp};
use otp_courier::domain::AppId;
use sqlx::PgPool;

async fn name(cache: &Cache, id: &AppId) -> Option<String> {
    let app = cache.get(id).await.expect("batch").expect("readable app");
    app.map(|app| app.name.clone())
}

#[sqlx::test]
async fn a_loaded_app_is_kept_for_its_time_and_an_unknown_app_is_not_kept(pool: PgPool) {
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
    let uncached = Cache::spawn(pool.clone(), Duration::ZERO);
    assert_eq!(name(&uncached, &id).await.as_deref(), Some("Renamed"));
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
