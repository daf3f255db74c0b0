//! Standard Webhooks: signing a callback and POSTing it through the SSRF guard.
//!
//! `webhook-signature` is `v1,<base64 HMAC-SHA256(key, id "." timestamp "." body)>` per
//! valid secret, space-separated, where the key is the base64 after `whsec_`: during a
//! rotation every valid secret signs, so receivers holding either one accept.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use reqwest::header::CONTENT_TYPE;
use reqwest::StatusCode;
use sha2::Sha256;

use crate::callbacks::ssrf::{Guard, GuardedResolver, Refused};
use crate::platform::config::CallbacksConfig;
use crate::provider::{read_limited, retry_after};

/// The `webhook-signature` value for one message, one `v1,` entry per secret that decodes.
pub fn signature(secrets: &[String], id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let entries: Vec<String> = secrets
        .iter()
        .filter_map(|secret| {
            let key = STANDARD.decode(secret.strip_prefix("whsec_").unwrap_or(secret)).ok()?;
            let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            Some(format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes())))
        })
        .collect();
    (!entries.is_empty()).then(|| entries.join(" "))
}

/// One signed callback, ready to send. (No `Debug`: it holds the signing secrets.)
#[derive(Clone)]
pub struct Message<'a> {
    pub url: &'a str,
    /// The event id, stable across retries.
    pub id: &'a str,
    pub body: &'a [u8],
    pub secrets: &'a [String],
}

/// How the receiver answered one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A 2xx.
    Accepted(u16),
    /// 410 Gone: the receiver wants no more callbacks at this URL.
    Gone,
    /// Anything to retry: another status, a timeout, a connection or DNS failure.
    Failed {
        status: Option<u16>,
        retry_after: Option<Duration>,
        error: String,
    },
    /// Never sent and never will be as things stand: the guard refused the destination,
    /// or the app has no signing secret.
    Refused(String),
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Accepted(status) => write!(f, "HTTP {status}"),
            Answer::Gone => f.write_str("HTTP 410 Gone"),
            Answer::Failed { error, .. } | Answer::Refused(error) => f.write_str(error),
        }
    }
}

impl Answer {
    pub fn status(&self) -> Option<u16> {
        match self {
            Answer::Accepted(status) => Some(*status),
            Answer::Gone => Some(StatusCode::GONE.as_u16()),
            Answer::Failed { status, .. } => *status,
            Answer::Refused(_) => None,
        }
    }
}

/// The HTTP client for callbacks: guarded resolver, no redirects, no proxy, timeouts.
#[derive(Debug, Clone)]
pub struct Sender {
    client: reqwest::Client,
    guard: Arc<Guard>,
    max_response_bytes: usize,
}

impl Sender {
    pub fn new(config: &CallbacksConfig) -> Result<Self, reqwest::Error> {
        Self::with_fixed_hosts(config, HashMap::new())
    }

    /// A sender whose resolver answers these names itself, before DNS; the guard still
    /// checks what they resolve to.
    pub fn with_fixed_hosts(
        config: &CallbacksConfig,
        fixed: HashMap<String, Vec<IpAddr>>,
    ) -> Result<Self, reqwest::Error> {
        let guard = Arc::new(Guard::new(config.allow_networks.clone(), config.allow_http));
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver::new(guard.clone(), fixed)))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(config.timeout())
            .connect_timeout(config.timeout().min(Duration::from_secs(5)))
            .user_agent(concat!("otp-courier/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            client,
            guard,
            max_response_bytes: config.max_response_bytes,
        })
    }

    /// Signs and POSTs one message; never returns an error, only an answer to record.
    #[tracing::instrument(skip_all, fields(webhook_id = message.id))]
    pub async fn send(&self, message: &Message<'_>) -> Answer {
        let url = match url::Url::parse(message.url) {
            Ok(url) => url,
            Err(error) => return Answer::Refused(format!("callback URL is invalid: {error}")),
        };
        if let Err(refused) = self.guard.check_url(&url) {
            return Answer::Refused(log_refusal(&refused));
        }
        let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
        let Some(signature) = signature(message.secrets, message.id, timestamp, message.body) else {
            return Answer::Refused("the app has no webhook signing secret".into());
        };
        let sent = self
            .client
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .header("webhook-id", message.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(message.body.to_vec())
            .send()
            .await;
        match sent {
            Ok(response) => self.answer(response).await,
            Err(error) => match refusal(&error) {
                Some(refused) => Answer::Refused(log_refusal(refused)),
                None => Answer::Failed {
                    status: None,
                    retry_after: None,
                    error: describe(&error),
                },
            },
        }
    }

    /// Reads at most `max_response_bytes` of the answer: a receiver cannot make us buffer more.
    async fn answer(&self, response: reqwest::Response) -> Answer {
        let status = response.status();
        let wait = retry_after(&response);
        let body = read_limited(response, self.max_response_bytes)
            .await
            .unwrap_or_default();
        if status.is_success() {
            return Answer::Accepted(status.as_u16());
        }
        if status == StatusCode::GONE {
            return Answer::Gone;
        }
        let excerpt: String = body.chars().filter(|c| !c.is_control()).take(200).collect();
        Answer::Failed {
            status: Some(status.as_u16()),
            retry_after: wait,
            error: format!("HTTP {status}: {excerpt}")
                .trim_end()
                .trim_end_matches(':')
                .to_string(),
        }
    }
}

/// Logs a refused destination with the address it resolved to, for operators; returns the
/// text kept for the tenant, which does not name it.
fn log_refusal(refused: &Refused) -> String {
    if let Refused::NotPublic { host, addr } = refused {
        tracing::warn!(host, %addr, "callback refused: the host resolves to an address that is not public");
    }
    refused.to_string()
}

/// The guard's refusal, if that is what failed the request (it comes back from the resolver
/// wrapped in reqwest's and hyper's errors).
fn refusal(error: &reqwest::Error) -> Option<&Refused> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(refused) = current.downcast_ref::<Refused>() {
            return Some(refused);
        }
        source = current.source();
    }
    None
}

/// A reqwest error with its causes, without the URL (the receiver's own business).
fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut text = kind.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text.chars().take(300).collect()
}

/// How long to wait before attempt `attempt + 1` after attempt `attempt` (1-based) failed:
/// the schedule's entry plus up to 20% jitter, or the receiver's longer `Retry-After`
/// (capped at the schedule's longest step). `None` once the schedule is spent.
pub fn next_delay(schedule: &[u64], attempt: u32, retry_after: Option<Duration>, jitter: f64) -> Option<Duration> {
    let base = Duration::from_secs(*schedule.get(usize::try_from(attempt).ok()?.checked_sub(1)?)?);
    let wait = base + base.mul_f64(jitter.clamp(0.0, 0.2));
    let ceiling = Duration::from_secs(schedule.iter().copied().max().unwrap_or(0));
    Some(retry_after.map_or(wait, |asked| wait.max(asked.min(ceiling))))
}

/// Whole milliseconds since `started`, for attempt records.
pub fn elapsed_ms(started: Instant) -> i32 {
    i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_matches_the_standard_webhooks_test_vector() {
        // The vector of the Standard Webhooks specification's reference libraries.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string();
        let body = br#"{"test": 2432232314}"#;
        let signed = signature(&[secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(
            signed.as_deref(),
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
    }

    #[test]
    fn every_valid_secret_signs_and_a_broken_one_is_skipped() {
        let secrets = vec![
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string(),
            "whsec_not base64!".to_string(),
            "whsec_c2Vjb25kIHNlY3JldA==".to_string(),
        ];
        let signed = signature(&secrets, "evt_1", 1, b"{}").expect("two secrets sign");
        let entries: Vec<&str> = signed.split(' ').collect();
        assert_eq!(entries.len(), 2);
        assert!(entries.iter().all(|e| e.starts_with("v1,")));
        assert_ne!(entries[0], entries[1]);
        assert_eq!(signature(&[], "evt_1", 1, b"{}"), None);
    }

    #[test]
    fn delays_follow_the_schedule_then_stop() {
        let schedule = [5, 300, 1800];
        assert_eq!(next_delay(&schedule, 1, None, 0.0), Some(Duration::from_secs(5)));
        assert_eq!(next_delay(&schedule, 3, None, 0.0), Some(Duration::from_secs(1800)));
        assert_eq!(next_delay(&schedule, 4, None, 0.0), None);
        assert_eq!(next_delay(&schedule, 0, None, 0.0), None);
        assert_eq!(next_delay(&schedule, 1, None, 0.2), Some(Duration::from_secs(6)));
        assert_eq!(
            next_delay(&schedule, 1, None, 5.0),
            Some(Duration::from_secs(6)),
            "jitter is capped"
        );
    }

    #[test]
    fn a_longer_retry_after_wins_up_to_the_longest_step() {
        let schedule = [5, 300];
        let asked = |s| Some(Duration::from_secs(s));
        assert_eq!(next_delay(&schedule, 1, asked(60), 0.0), Some(Duration::from_secs(60)));
        assert_eq!(next_delay(&schedule, 1, asked(1), 0.0), Some(Duration::from_secs(5)));
        assert_eq!(
            next_delay(&schedule, 1, asked(86_400), 0.0),
            Some(Duration::from_secs(300))
        );
    }
}
