//! The SSRF guard, proven on loopback only: a canary listener on 127.0.0.1 (and ::1) counts
//! every byte that reaches it. Non-loopback ranges are covered by the classifier's unit tests
//! in `src/callbacks/ssrf.rs`, which send no packet.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use otp_courier::callbacks::webhook::Sender;
use serde_json::json;
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{wait_until, Harness};

/// A name the dispatcher's resolver answers with 127.0.0.1, standing in for a public DNS
/// name that an attacker points at loopback.
const REBOUND_NAME: &str = "hooks.rebound.test";

/// Listens on 127.0.0.1 and ::1 at one port, counts connections and bytes, answers 204.
struct Canary {
    port: u16,
    connections: Arc<AtomicUsize>,
    bytes: Arc<AtomicUsize>,
}

impl Canary {
    async fn start() -> Self {
        let v4 = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1");
        let port = v4.local_addr().expect("address").port();
        let v6 = TcpListener::bind(("::1", port))
            .await
            .expect("bind ::1 at the same port");
        let canary = Self {
            port,
            connections: Arc::default(),
            bytes: Arc::default(),
        };
        for listener in [v4, v6] {
            let (connections, bytes) = (canary.connections.clone(), canary.bytes.clone());
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    connections.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(answer(stream, bytes.clone()));
                }
            });
        }
        canary
    }

    fn heard(&self) -> (usize, usize) {
        (
            self.connections.load(Ordering::SeqCst),
            self.bytes.load(Ordering::SeqCst),
        )
    }

    /// The same listener under every spelling the guard has to see through.
    fn urls(&self) -> Vec<String> {
        let port = self.port;
        [
            "127.0.0.1",
            "localhost",
            "[::1]",
            "0.0.0.0",
            "2130706433",
            "0x7f.1",
            "[::ffff:127.0.0.1]",
            REBOUND_NAME,
        ]
        .iter()
        .map(|host| format!("http://{host}:{port}/hook"))
        .collect()
    }
}

/// Reads one request (headers, then Content-Length bytes) and answers 204.
async fn answer(mut stream: TcpStream, bytes: Arc<AtomicUsize>) {
    let mut request = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let Ok(n) = stream.read(&mut buffer).await else { return };
        if n == 0 {
            return;
        }
        bytes.fetch_add(n, Ordering::SeqCst);
        request.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if request.len() >= end + 4 + length {
                break;
            }
        }
    }
    let _ = stream
        .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
        .await;
}

async fn record(harness: &Harness, url: &str) {
    harness.record_event("shop", url).await;
}

/// Waits until no event is pending any more.
async fn settled(harness: &Harness) {
    wait_until("every event settled", Duration::from_secs(15), || async {
        outcomes(harness)
            .await
            .iter()
            .all(|(_, state, _, _)| state != "pending")
    })
    .await;
}

/// A dispatcher allowing `networks`, with events to every spelling of the canary.
async fn dispatch_to_canary(pool: PgPool, networks: serde_json::Value) -> (Harness, Canary) {
    let canary = Canary::start().await;
    let mut harness = Harness::new(pool).await;
    harness.set("callbacks.allow_networks", networks);
    harness.create_app("shop", json!({"": "Code {{pin}}"})).await;
    harness.webhook_secret("shop", None).await;
    for url in canary.urls() {
        record(&harness, &url).await;
    }
    let fixed = HashMap::from([(REBOUND_NAME.to_string(), vec![IpAddr::from([127, 0, 0, 1])])]);
    let sender = Sender::with_fixed_hosts(&harness.config().callbacks, fixed).expect("sender");
    harness.start_dispatcher_with(sender);
    (harness, canary)
}

async fn outcomes(harness: &Harness) -> Vec<(String, String, Option<String>, i32)> {
    sqlx::query_as("select callback_url, state, last_error, attempts from outbox order by seq")
        .fetch_all(&harness.pool)
        .await
        .expect("outbox")
}

#[sqlx::test]
async fn callbacks_to_loopback_in_any_spelling_are_refused_and_the_canary_hears_nothing(pool: PgPool) {
    let (harness, canary) = dispatch_to_canary(pool, json!([])).await;
    settled(&harness).await;

    for (url, state, error, attempts) in outcomes(&harness).await {
        let error = error.unwrap_or_default();
        assert_eq!(
            (state.as_str(), attempts),
            ("dead", 1),
            "{url}: refused for good, no retries"
        );
        assert!(
            error.starts_with("callback host") && error.contains("is not a public address"),
            "{url}: {error}"
        );
    }
    assert_eq!(canary.heard(), (0, 0), "not one connection or byte reached loopback");
    harness.finish().await;
}

#[sqlx::test]
async fn with_loopback_allowlisted_the_same_urls_reach_the_canary(pool: PgPool) {
    // The control for the test above: the canary hears these URLs when the guard lets them.
    let networks = json!(["127.0.0.0/8", "::1", "::ffff:127.0.0.1", "0.0.0.0"]);
    let (harness, canary) = dispatch_to_canary(pool, networks).await;
    settled(&harness).await;

    for (url, state, error, _) in outcomes(&harness).await {
        assert_eq!(state, "delivered", "{url}: {error:?}");
    }
    assert_eq!(canary.heard().0, canary.urls().len(), "one connection per URL");
    harness.finish().await;
}

#[sqlx::test]
async fn a_name_with_one_allowed_and_one_refused_address_is_refused_whole(pool: PgPool) {
    // Both answers are loopback, so nothing could leave the machine even if the guard failed;
    // only 127.0.0.1 is allowlisted, so ::1 stands for the private address of a mixed answer.
    let canary = Canary::start().await;
    let mut harness = Harness::new(pool).await;
    harness.create_app("shop", json!({"": "Code {{pin}}"})).await;
    harness.webhook_secret("shop", None).await;
    record(&harness, &format!("http://{REBOUND_NAME}:{}/hook", canary.port)).await;
    let fixed = HashMap::from([(
        REBOUND_NAME.to_string(),
        vec![
            IpAddr::from([127, 0, 0, 1]),
            IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        ],
    )]);
    harness.start_dispatcher_with(Sender::with_fixed_hosts(&harness.config().callbacks, fixed).expect("sender"));
    settled(&harness).await;

    let (_, state, error, _) = outcomes(&harness).await.remove(0);
    assert_eq!(state, "dead");
    let error = error.unwrap_or_default();
    assert!(error.contains(REBOUND_NAME), "the refused host is named: {error}");
    assert!(
        !error.contains("::1") && !error.contains("127.0.0.1"),
        "the address a name resolved to is not told to the tenant who gave the URL: {error}"
    );
    assert_eq!(canary.heard(), (0, 0), "not even the allowed address was tried");
    harness.finish().await;
}

#[sqlx::test]
async fn a_redirect_is_not_followed(pool: PgPool) {
    let canary = Canary::start().await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(307).insert_header("location", format!("http://127.0.0.1:{}/hook", canary.port)),
        )
        .mount(&receiver)
        .await;
    let mut harness = Harness::new(pool).await;
    harness.create_app("shop", json!({"": "Code {{pin}}"})).await;
    harness.webhook_secret("shop", None).await;
    record(&harness, &receiver.uri()).await;
    harness.start_dispatcher();
    wait_until("the first attempt is recorded", Duration::from_secs(10), || async {
        sqlx::query_scalar::<_, Option<i32>>("select http_status from callback_attempts")
            .fetch_optional(&harness.pool)
            .await
            .expect("attempts")
            .flatten()
            == Some(307)
    })
    .await;

    assert_eq!(canary.heard(), (0, 0), "the Location was not followed");
    harness.finish().await;
}
