//! Send limits counted in batches give the verdicts one-by-one counting would.

use std::collections::BTreeMap;

use otp_courier::otp::ratelimit::{count_sends, SendKey};
use otp_courier::platform::config::{Limit, LimitsConfig};
use sqlx::PgPool;

#[sqlx::test]
async fn a_batch_of_sends_is_counted_as_one_by_one_and_a_send_refused_for_its_number_spares_the_app(pool: PgPool) {
    let limit = |max| Limit {
        max,
        window_seconds: 600,
    };
    let limits = LimitsConfig {
        send_per_phone: limit(2),
        send_per_phone_all_apps: limit(100),
        send_per_app: limit(3),
        send_per_country: limit(100),
        verify_per_app: limit(100),
        verify_failures_per_phone: limit(100),
        rejections_per_app: limit(100),
    };
    let send = |phone: &str| SendKey {
        app: "shop".into(),
        phone: phone.into(),
        region: Some("US".into()),
    };
    // Four sends to each of two numbers, counted in one batch.
    let sends: Vec<SendKey> = ["+14155550101", "+14155550102"]
        .iter()
        .flat_map(|phone| std::iter::repeat_n(send(phone), 4))
        .collect();
    let mut tx = pool.begin().await.expect("transaction");
    let counted = count_sends(&mut tx, &limits, &sends).await.expect("counted");
    tx.commit().await.expect("commit");
    let mut verdicts: BTreeMap<&str, usize> = BTreeMap::new();
    for verdict in counted {
        *verdicts
            .entry(verdict.err().map_or("allowed", |(name, _)| name))
            .or_default() += 1;
    }
    // Two per number pass the number's limit; of those four, the app's limit passes three.
    assert_eq!(
        verdicts,
        BTreeMap::from([("allowed", 3), ("send_per_app", 1), ("send_per_phone", 4)])
    );
    let counted: BTreeMap<String, i32> = sqlx::query_as("select key, hits from rate_limit_windows")
        .fetch_all(&pool)
        .await
        .expect("counters")
        .into_iter()
        .collect();
    assert_eq!(
        counted,
        BTreeMap::from([
            ("send:app:shop".to_string(), 4),
            ("send:country:shop:US".to_string(), 3),
            ("send:phone:shop:+14155550101".to_string(), 4),
            ("send:phone:shop:+14155550102".to_string(), 4),
            ("send:phone:+14155550101".to_string(), 2),
            ("send:phone:+14155550102".to_string(), 2),
        ]),
        "a send refused for its number is not counted against the app, nor one refused for the app against the country"
    );
}
