//! The chaos run: jobs flow through a worker process and a dispatcher process while the
//! worker is SIGKILLed and restarted, RabbitMQ and PostgreSQL are restarted, the provider
//! answers bursts of 503, 429 and timeouts, and the callback receiver goes away. The
//! provider posts signed delivery receipts to an API process: some duplicated, some before
//! it answers the send, some out of order. A checker then accounts for every job: nothing
//! lost, no send beyond the kills that hit it, every final delivery state as its receipts
//! say (none lost, none moved backwards), every state change called back with one
//! `webhook-id`, and no PIN in any log line.
//!
//! `CHAOS_PROFILE=full` is the full run (10,000 jobs, 20 kills, 3 broker and 3 database
//! restarts); the default is the reduced run CI makes. It stops shared services, so
//! `scripts/test.sh` runs it alone, after everything else; it leaves both running.
//! docs/RELIABILITY.md has the results and what each check means.

#[allow(dead_code)]
#[path = "it/harness.rs"]
mod harness;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use harness::{amqp_url, postgres_version, text_header, Harness, RoleProcess, PIN_KEY};
use lapin::{BasicProperties, Channel, Connection};
use otp_courier::domain::{EventId, OtpId};
use otp_courier::message::pin::{self, PinKey, PinLength, PinType};
use otp_courier::platform::amqp;
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const APP: &str = "chaos";
/// Job `n` goes to +1 415 200 0000 + n, so the fakes can tell which job a request is for.
const FIRST_NUMBER: u64 = 14_152_000_000;
/// How long each provider burst lasts.
const BURST: Duration = Duration::from_secs(5);
/// Longer than `delivery.timeout_ms`: a request in a timeout burst is never answered in time.
const HANG: Duration = Duration::from_secs(5);
/// How long the provider takes to accept a message, so that kills land on sends in flight.
const PROVIDER_LATENCY: Duration = Duration::from_millis(100);
/// How long the receiver takes to answer, so that dispatcher kills land on callbacks in flight.
const RECEIVER_LATENCY: Duration = Duration::from_millis(50);

/// How hard one run pushes.
#[derive(Debug, Serialize)]
struct Profile {
    name: &'static str,
    jobs: u64,
    /// Publishing is spread over this span, and every fault falls inside it.
    span: Duration,
    worker_kills: usize,
    dispatcher_kills: usize,
    broker_restarts: usize,
    database_restarts: usize,
    /// Each cycle is a burst of 503s, one of 429s and one of timeouts.
    burst_cycles: usize,
    receiver_down: Duration,
    /// How long the system may take to finish once publishing is done.
    settle: Duration,
}

impl Profile {
    fn from_env() -> Self {
        match std::env::var("CHAOS_PROFILE").as_deref() {
            Ok("full") => Profile {
                name: "full",
                jobs: 10_000,
                span: Duration::from_secs(300),
                worker_kills: 20,
                dispatcher_kills: 4,
                broker_restarts: 3,
                database_restarts: 3,
                burst_cycles: 3,
                receiver_down: Duration::from_secs(30),
                settle: Duration::from_secs(600),
            },
            Ok("ci") | Err(_) => Profile {
                name: "ci",
                jobs: 2_000,
                span: Duration::from_secs(60),
                worker_kills: 3,
                dispatcher_kills: 1,
                broker_restarts: 1,
                database_restarts: 1,
                burst_cycles: 1,
                receiver_down: Duration::from_secs(30),
                settle: Duration::from_secs(300),
            },
            Ok(other) => panic!("CHAOS_PROFILE is `ci` (the default) or `full`, not `{other}`"),
        }
    }
}

/// How a job must end. Every 50th is refused by the provider for good; every 100th has a
/// phone number the worker rejects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Sent,
    Failed,
    Rejected,
}

impl Expect {
    fn of(n: u64) -> Self {
        if n % 100 == 13 {
            Expect::Rejected
        } else if n % 50 == 7 {
            Expect::Failed
        } else {
            Expect::Sent
        }
    }

    fn event(self) -> &'static str {
        match self {
            Expect::Sent => "otp.sent",
            Expect::Failed => "otp.delivery_failed",
            Expect::Rejected => "otp.rejected",
        }
    }
}

/// The receipts the provider posts for each message of job `n`, in this order, and whether
/// the first goes out before the provider answers the send (a fast provider).
fn receipts_of(n: u64) -> (&'static [&'static str], bool) {
    match n % 4 {
        0 => (&["DELIVRD", "DELIVRD"], false),
        1 => (&["DELIVRD"], true),
        2 => (&["DELIVRD", "ACK"], false),
        _ => (&["UNDELIV", "DELIVRD"], false),
    }
}

/// The delivery a sent job must end in, by its receipts: `undelivered` is final.
fn final_delivery(n: u64) -> &'static str {
    if n % 4 == 3 {
        "undelivered"
    } else {
        "delivered"
    }
}

const RECEIPT_SECRET: &str = "chaos-receipt-secret-0123456789";

/// Every 10th job that is to be sent goes SMS, then WhatsApp after 3 s without a
/// verification; of those, every other one (`n % 20 == 5`) is verified during its SMS step
/// (`verify_first_steps`).
fn has_workflow(n: u64) -> bool {
    n % 10 == 5 && Expect::of(n) == Expect::Sent
}

fn job(n: u64, callback_url: &str) -> Vec<u8> {
    let phone = match Expect::of(n) {
        Expect::Rejected => "+1415".to_string(),
        _ => format!("+{}", FIRST_NUMBER + n),
    };
    // Eight alphanumeric characters: a PIN that shows up in a log line cannot be mistaken
    // for a timestamp or a counter.
    let mut job = json!({"appId": APP, "phoneNumber": phone, "requestId": request_id(n), "otpCallbackUrl": callback_url,
           "pinType": "alphanumeric", "pinLength": 8, "ttl": 1800, "metadata": {"n": n}});
    if has_workflow(n) {
        job["workflow"] = json!([{"channel": "sms", "timeoutSeconds": 3}, {"channel": "whatsapp"}]);
    }
    job.to_string().into_bytes()
}

fn request_id(n: u64) -> String {
    format!("chaos-{n}")
}

fn job_number(phone: &str) -> Option<u64> {
    phone
        .trim_start_matches('+')
        .parse::<u64>()
        .ok()?
        .checked_sub(FIRST_NUMBER)
}

// ---------------------------------------------------------------------------------------
// The fake provider: answers by mode, and records every request with what it answered.

const ACCEPT: u8 = 0;
const UNAVAILABLE: u8 = 1;
const TOO_MANY: u8 = 2;
const TIME_OUT: u8 = 3;

struct ProviderHit {
    otp: String,
    channel: String,
    text: String,
    at: Duration,
    /// 0: never answered in time.
    status: u16,
}

struct Provider {
    epoch: Instant,
    mode: AtomicU8,
    hits: Mutex<Vec<ProviderHit>>,
    /// Where each accepted message's receipts go: (message id, job number).
    receipts: tokio::sync::mpsc::UnboundedSender<(String, u64)>,
}

async fn provider(State(provider): State<Arc<Provider>>, body: axum::body::Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let n = request["to"].as_str().and_then(job_number);
    let status = match provider.mode.load(Ordering::SeqCst) {
        UNAVAILABLE => 503,
        TOO_MANY => 429,
        TIME_OUT => 0,
        _ if n.map(Expect::of) == Some(Expect::Failed) => 400,
        _ => 200,
    };
    let message_id = {
        let mut hits = provider.hits.lock().expect("lock");
        hits.push(ProviderHit {
            otp: request["otp"].as_str().unwrap_or_default().to_string(),
            channel: request["channel"].as_str().unwrap_or_default().to_string(),
            text: request["text"].as_str().unwrap_or_default().to_string(),
            at: provider.epoch.elapsed(),
            status,
        });
        format!("m-{}", hits.len())
    };
    match status {
        0 => {
            tokio::time::sleep(HANG).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        429 => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], "slow down").into_response(),
        400 => (StatusCode::BAD_REQUEST, r#"{"error":"unreachable number"}"#).into_response(),
        503 => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        _ => {
            let n = n.unwrap_or_default();
            let (_, early) = receipts_of(n);
            if early {
                let _ = provider.receipts.send((message_id.clone(), n));
            }
            tokio::time::sleep(PROVIDER_LATENCY).await;
            if !early {
                let _ = provider.receipts.send((message_id.clone(), n));
            }
            (StatusCode::OK, json!({"id": message_id}).to_string()).into_response()
        }
    }
}

// ---------------------------------------------------------------------------------------
// The callback receiver: verifies every signature, records every callback, and can go away
// (its port refusing connections) and come back on the same port.

struct Callback {
    webhook_id: String,
    event_type: String,
    /// The workflow step the event is about, for the jobs that have one.
    step: Option<i64>,
    request_id: String,
}

struct Receiver {
    webhook: standardwebhooks::Webhook,
    hits: Mutex<Vec<Callback>>,
    bad_signatures: AtomicUsize,
}

async fn receive(State(receiver): State<Arc<Receiver>>, headers: HeaderMap, body: axum::body::Bytes) -> StatusCode {
    if receiver.webhook.verify(&body, &headers).is_err() {
        receiver.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED;
    }
    let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    receiver.hits.lock().expect("lock").push(Callback {
        webhook_id: header("webhook-id"),
        event_type: event["type"].as_str().unwrap_or_default().to_string(),
        step: event["data"]["step"].as_i64(),
        request_id: event["data"]["requestId"].as_str().unwrap_or_default().to_string(),
    });
    tokio::time::sleep(RECEIVER_LATENCY).await;
    StatusCode::NO_CONTENT
}

struct ReceiverServer {
    state: Arc<Receiver>,
    address: SocketAddr,
    running: Option<(CancellationToken, JoinHandle<()>)>,
}

impl ReceiverServer {
    async fn start(state: Arc<Receiver>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let mut server = Self {
            state,
            address,
            running: None,
        };
        server.serve(listener);
        server
    }

    fn url(&self) -> String {
        format!("http://{}/callbacks", self.address)
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let router = axum::Router::new()
            .route("/callbacks", axum::routing::post(receive))
            .with_state(self.state.clone());
        let stop = CancellationToken::new();
        let signal = stop.clone().cancelled_owned();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).with_graceful_shutdown(signal).await;
        });
        self.running = Some((stop, task));
    }

    /// Stops listening and closes its connections: callbacks now fail to connect.
    async fn down(&mut self) {
        if let Some((stop, mut task)) = self.running.take() {
            stop.cancel();
            if tokio::time::timeout(Duration::from_secs(5), &mut task).await.is_err() {
                task.abort();
            }
        }
    }

    async fn up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match tokio::net::TcpListener::bind(self.address).await {
                Ok(listener) => break listener,
                Err(error) => {
                    assert!(Instant::now() < deadline, "rebinding {}: {error}", self.address);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        self.serve(listener);
    }
}

async fn serve_provider(state: Arc<Provider>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let router = axum::Router::new()
        .route("/sms", axum::routing::post(provider))
        .with_state(state);
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{address}/sms")
}

// ---------------------------------------------------------------------------------------
// The provider's receipts: signed JSON posted to the API process's receipt route, each
// message's in its order, retried while the API or its database is away.

#[derive(Default)]
struct Receipts {
    posted: AtomicUsize,
    refused: AtomicUsize,
    given_up: AtomicUsize,
}

async fn post_receipts(
    url: String,
    mut messages: tokio::sync::mpsc::UnboundedReceiver<(String, u64)>,
    counts: Arc<Receipts>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    while let Some((message_id, n)) = messages.recv().await {
        let (http, url, counts) = (http.clone(), url.clone(), counts.clone());
        tokio::spawn(async move {
            for status in receipts_of(n).0 {
                let body = json!({"data": {"id": message_id, "state": status}}).to_string();
                let signature = {
                    use hmac::Mac;
                    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(RECEIPT_SECRET.as_bytes()).expect("key");
                    mac.update(body.as_bytes());
                    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
                };
                let deadline = Instant::now() + Duration::from_secs(120);
                loop {
                    let answer = http
                        .post(&url)
                        .header("x-signature", &signature)
                        .body(body.clone())
                        .send()
                        .await;
                    match answer.map(|a| a.status()) {
                        Ok(StatusCode::OK) => {
                            counts.posted.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        Ok(StatusCode::FORBIDDEN) => {
                            counts.refused.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                        _ if Instant::now() > deadline => {
                            counts.given_up.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                        _ => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
            }
        });
    }
}

// ---------------------------------------------------------------------------------------
// The verifier: verifies, through the API, the workflow jobs chosen for it while they are
// on their first step, so that their second step must never start.

async fn verify_first_steps(pool: PgPool, api: String, key: (String, String), stop: CancellationToken) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    while !stop.is_cancelled() {
        let due: Vec<OtpState> = sqlx::query_as(
            "select id, request_id, delivery, app_id, pin_salt, generation, pin_type, pin_length from otps
             where app_id = $1 and status = 'pending' and workflow_step = 0 and delivery in ('sent', 'delivered')
               and (metadata->>'n')::bigint % 20 = 5",
        )
        .bind(APP)
        .fetch_all(&pool)
        .await
        .unwrap_or_default();
        for otp in due {
            let _ = http
                .post(format!("{api}/v1/otp/verify"))
                .header("x-api-key", &key.0)
                .header("x-api-secret", &key.1)
                .json(&json!({"otpId": OtpId::from_uuid(otp.id).to_string(), "code": otp.pin()}))
                .send()
                .await;
        }
        // A poll of the database, as a client would look for codes to enter.
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

// ---------------------------------------------------------------------------------------
// The producer: publishes persistent jobs with confirms, at an even pace; when the broker
// goes away it reconnects and publishes the job again (its request id makes that harmless).

struct Producer {
    queue: String,
    connection: Option<(Connection, Channel)>,
    republished: usize,
}

impl Producer {
    async fn connect() -> Result<(Connection, Channel), lapin::Error> {
        let connection = Connection::connect(&amqp_url(), Default::default()).await?;
        let channel = amqp::confirm_channel(&connection).await?;
        Ok((connection, channel))
    }

    async fn publish(&mut self, body: &[u8]) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut tries = 0;
        loop {
            if self.connection.is_none() {
                self.connection = Self::connect().await.ok();
            }
            if let Some((_, channel)) = &self.connection {
                let properties = BasicProperties::default().with_content_type("application/json".into());
                let confirmed = amqp::publish_confirmed(channel, &self.queue, body, properties)
                    .await
                    .is_ok();
                if confirmed {
                    self.republished += usize::from(tries > 0);
                    return;
                }
                self.connection = None;
            }
            tries += 1;
            assert!(Instant::now() < deadline, "the broker did not take a job for 120 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn produce(profile: &Profile, producer: &mut Producer, callback_url: &str, epoch: Instant) {
    let interval = profile.span.as_secs_f64() / profile.jobs as f64;
    for n in 0..profile.jobs {
        tokio::time::sleep_until((epoch + Duration::from_secs_f64(n as f64 * interval)).into()).await;
        producer.publish(&job(n, callback_url)).await;
        if (n + 1) % (profile.jobs / 10).max(1) == 0 {
            eprintln!(
                "[{:>6.1}s] published {}/{}",
                epoch.elapsed().as_secs_f64(),
                n + 1,
                profile.jobs
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// The faults.

#[derive(Debug, Clone, Copy)]
enum Fault {
    KillWorker,
    KillDispatcher,
    RestartBroker,
    RestartDatabase,
    Provider(u8),
    ReceiverDown,
    ReceiverUp,
}

/// When each fault strikes. The span is cut into one slot per worker kill, the kill in its
/// middle; a provider burst takes the first half of a slot, a broker or database restart
/// starts 2 s after the kill. So no burst hides a kill (a kill during a burst would find no
/// send in flight), and no kill falls in the lease after a database restart: a send repeated
/// because a restart lost its outcome is never excused as the work of a kill.
fn schedule(profile: &Profile) -> Vec<(Duration, Fault)> {
    let slots = profile.worker_kills.max(1);
    let slot = profile.span / slots as u32;
    let kill_at = |i: usize| slot * i as u32 + slot / 2;
    // Slot `i` of `count` spread over the slots, `offset` (0-1) into each share.
    let pick = |i: usize, count: usize, offset: f64| ((i as f64 + offset) * slots as f64 / count as f64) as usize;
    let mut faults = Vec::new();
    for i in 0..profile.worker_kills {
        faults.push((kill_at(i), Fault::KillWorker));
    }
    for i in 0..profile.database_restarts {
        let at = kill_at(pick(i, profile.database_restarts, 0.5));
        faults.push((at + Duration::from_secs(2), Fault::RestartDatabase));
    }
    for i in 0..profile.broker_restarts {
        let at = kill_at(pick(i, profile.broker_restarts, 0.0));
        faults.push((at + Duration::from_secs(2), Fault::RestartBroker));
    }
    let bursts = profile.burst_cycles * 3;
    for i in 0..bursts {
        let mode = [UNAVAILABLE, TOO_MANY, TIME_OUT][i % 3];
        let start = slot * pick(i, bursts, 0.0) as u32 + Duration::from_secs(1);
        faults.push((start, Fault::Provider(mode)));
        faults.push((start + BURST, Fault::Provider(ACCEPT)));
    }
    // The first dispatcher kill lands 1 s after the receiver is back, amid the backlog.
    let down = profile.span.mul_f64(0.3);
    faults.push((down, Fault::ReceiverDown));
    faults.push((down + profile.receiver_down, Fault::ReceiverUp));
    for i in 0..profile.dispatcher_kills {
        let at = match i {
            0 => down + profile.receiver_down + Duration::from_secs(1),
            _ => profile.span.mul_f64((i as f64 + 0.7) / profile.dispatcher_kills as f64),
        };
        faults.push((at, Fault::KillDispatcher));
    }
    faults.sort_by_key(|(at, _)| *at);
    faults
}

/// The processes and fakes the faults act on, and what happened when.
struct Stage {
    config: PathBuf,
    logs: PathBuf,
    worker: RoleProcess,
    workers_started: usize,
    dispatcher: RoleProcess,
    dispatchers_started: usize,
    provider: Arc<Provider>,
    receiver: ReceiverServer,
    worker_kills: Vec<Duration>,
    /// When each broker or database restart was over.
    restarts_done: Vec<time::OffsetDateTime>,
    timeline: Vec<(f64, String)>,
}

const RUST_LOG: &str = "otp_courier=debug,info";

/// Starts the `number`th process of `role`, logging to `<role>-<number>.log` in `logs`.
fn spawn_role(role: &str, number: usize, config: &Path, logs: &Path) -> RoleProcess {
    RoleProcess::spawn_logging(role, config, &logs.join(format!("{role}-{number}.log")), RUST_LOG)
}

impl Stage {
    fn spawn(&mut self, role: &str) -> RoleProcess {
        let count = match role {
            "worker" => &mut self.workers_started,
            _ => &mut self.dispatchers_started,
        };
        *count += 1;
        spawn_role(role, *count, &self.config, &self.logs)
    }

    async fn inflict(&mut self, fault: Fault, epoch: Instant) {
        let started = epoch.elapsed();
        match fault {
            Fault::KillWorker => {
                self.worker.kill().await;
                self.worker_kills.push(epoch.elapsed());
                self.worker = self.spawn("worker");
            }
            Fault::KillDispatcher => {
                self.dispatcher.kill().await;
                self.dispatcher = self.spawn("dispatcher");
            }
            Fault::RestartBroker => {
                run("rabbitmqctl", &["-q", "stop_app"]).await;
                tokio::time::sleep(Duration::from_secs(2)).await;
                run("rabbitmqctl", &["-q", "start_app"]).await;
                run("rabbitmqctl", &["-q", "await_startup"]).await;
                self.restarts_done.push(time::OffsetDateTime::now_utc());
            }
            Fault::RestartDatabase => {
                let version = postgres_version();
                run(
                    "pg_ctlcluster",
                    &["--skip-systemctl-redirect", "-m", "fast", &version, "main", "stop"],
                )
                .await;
                tokio::time::sleep(Duration::from_secs(2)).await;
                run(
                    "pg_ctlcluster",
                    &["--skip-systemctl-redirect", &version, "main", "start"],
                )
                .await;
                self.restarts_done.push(time::OffsetDateTime::now_utc());
            }
            Fault::Provider(mode) => self.provider.mode.store(mode, Ordering::SeqCst),
            Fault::ReceiverDown => self.receiver.down().await,
            Fault::ReceiverUp => self.receiver.up().await,
        }
        let what = match fault {
            Fault::Provider(UNAVAILABLE) => "provider answers 503".to_string(),
            Fault::Provider(TOO_MANY) => "provider answers 429".to_string(),
            Fault::Provider(TIME_OUT) => "provider times out".to_string(),
            Fault::Provider(_) => "provider accepts".to_string(),
            other => format!("{other:?}"),
        };
        let took = (epoch.elapsed() - started).as_secs_f64();
        eprintln!("[{:>6.1}s] {what} ({took:.1} s)", started.as_secs_f64());
        self.timeline.push((started.as_secs_f64(), what));
    }

    async fn inflict_all(&mut self, faults: Vec<(Duration, Fault)>, epoch: Instant) {
        for (at, fault) in faults {
            tokio::time::sleep_until((epoch + at).into()).await;
            self.inflict(fault, epoch).await;
        }
    }
}

async fn run(program: &str, args: &[&str]) {
    let status = tokio::process::Command::new(program)
        .args(args)
        .status()
        .await
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(status.success(), "{program} {args:?} failed: {status}");
}

// ---------------------------------------------------------------------------------------
// The checker.

#[derive(sqlx::FromRow)]
struct OtpState {
    id: Uuid,
    request_id: String,
    delivery: String,
    app_id: String,
    pin_salt: Vec<u8>,
    generation: i32,
    pin_type: String,
    pin_length: i16,
}

impl OtpState {
    fn pin(&self) -> String {
        pin::derive(
            &PinKey::parse(PIN_KEY).expect("key"),
            &pin::PinInput {
                app_id: &self.app_id,
                salt: &self.pin_salt,
                otp: OtpId::from_uuid(self.id),
                generation: self.generation as u32,
            },
            PinType::parse(&self.pin_type).expect("type"),
            PinLength::parse(self.pin_length.into()).expect("length"),
        )
        .expose()
        .to_string()
    }
}

#[derive(sqlx::FromRow)]
struct Event {
    id: Uuid,
    event_type: String,
    state: String,
    attempts: i32,
    request_id: Option<String>,
    /// The workflow step, for the jobs that have one.
    step: Option<String>,
}

/// What the checker found; every count but the totals must be zero.
#[derive(Debug, Default, Serialize)]
struct Report {
    published: u64,
    republished: usize,
    sent: usize,
    failed: usize,
    rejected: usize,
    lost: usize,
    wrong_outcome: usize,
    provider_requests: usize,
    provider_answers: BTreeMap<u16, usize>,
    accepted_twice: usize,
    sends_beyond_bound: usize,
    wrong_pin: usize,
    events: usize,
    events_undelivered: usize,
    jobs_without_final_event: usize,
    events_missing_callback: usize,
    state_changes_recorded_twice: usize,
    callbacks_received: usize,
    /// Callbacks received more than once (always under their one `webhook-id`).
    callbacks_repeated: usize,
    callback_attempts: i64,
    callbacks_with_unknown_id: usize,
    state_changes_with_two_webhook_ids: usize,
    bad_signatures: usize,
    rejections_recorded_twice: usize,
    /// Restarts after which no job was taken in within 10 s (jobs arrive all the time).
    restarts_without_intake: usize,
    rejected_without_dead_letter: usize,
    /// Sent jobs by their final delivery, as receipts left it.
    delivered: usize,
    undelivered: usize,
    /// Sent jobs whose delivery is not what their receipts say (a receipt lost, or a
    /// delivery moved backwards).
    delivery_not_as_receipts_say: usize,
    receipts_posted: usize,
    receipts_refused: usize,
    receipts_given_up: usize,
    /// Workflow jobs (SMS, then WhatsApp after 3 s), the steps they moved on, the ones
    /// verified during their first step, and steps started after an OTP's verification.
    workflow_jobs: usize,
    fallbacks: i64,
    verified_in_first_step: i64,
    steps_after_verification: i64,
    log_lines: usize,
    log_lines_with_pin: usize,
    worker_kills: usize,
    workers_started: usize,
    dispatchers_started: usize,
    seconds: f64,
}

impl Report {
    fn problems(&self) -> Vec<(&'static str, usize)> {
        [
            ("lost", self.lost),
            ("wrong_outcome", self.wrong_outcome),
            ("sends_beyond_bound", self.sends_beyond_bound),
            ("wrong_pin", self.wrong_pin),
            ("events_undelivered", self.events_undelivered),
            ("jobs_without_final_event", self.jobs_without_final_event),
            ("events_missing_callback", self.events_missing_callback),
            ("state_changes_recorded_twice", self.state_changes_recorded_twice),
            ("callbacks_with_unknown_id", self.callbacks_with_unknown_id),
            (
                "state_changes_with_two_webhook_ids",
                self.state_changes_with_two_webhook_ids,
            ),
            ("bad_signatures", self.bad_signatures),
            ("rejections_recorded_twice", self.rejections_recorded_twice),
            ("restarts_without_intake", self.restarts_without_intake),
            ("rejected_without_dead_letter", self.rejected_without_dead_letter),
            ("delivery_not_as_receipts_say", self.delivery_not_as_receipts_say),
            ("receipts_refused", self.receipts_refused),
            ("receipts_given_up", self.receipts_given_up),
            ("steps_after_verification", self.steps_after_verification as usize),
            ("log_lines_with_pin", self.log_lines_with_pin),
        ]
        .into_iter()
        .filter(|(_, count)| *count > 0)
        .collect()
    }
}

/// Every job has its final state (a sent one, the state its receipts give it) and no
/// callback is pending. Errors (the database restarting under the test's own pool) mean
/// "not yet".
async fn settled(pool: &PgPool, jobs: u64) -> bool {
    let counts: Result<(i64, i64, i64), _> = sqlx::query_as(
        "select (select count(*) from otps where delivery in ('delivered', 'undelivered', 'failed')),
                (select count(distinct request_id) from otp_rejections),
                (select count(*) from outbox where state = 'pending')",
    )
    .fetch_one(pool)
    .await;
    counts.is_ok_and(|(done, rejected, pending)| done + rejected == jobs as i64 && pending == 0)
}

async fn check(
    harness: &Harness,
    profile: &Profile,
    stage: &Stage,
    dead_letters: &[(Vec<u8>, BasicProperties)],
) -> Report {
    let mut report = Report {
        published: profile.jobs,
        worker_kills: stage.worker_kills.len(),
        workers_started: stage.workers_started,
        dispatchers_started: stage.dispatchers_started,
        ..Report::default()
    };
    let otps: Vec<OtpState> =
        sqlx::query_as("select id, request_id, delivery, app_id, pin_salt, generation, pin_type, pin_length from otps where app_id = $1")
            .bind(APP)
            .fetch_all(&harness.pool)
            .await
            .expect("otps");
    let rejections: HashMap<String, i64> =
        sqlx::query_as("select request_id, count(*) from otp_rejections where app_id = $1 group by request_id")
            .bind(APP)
            .fetch_all(&harness.pool)
            .await
            .expect("rejections")
            .into_iter()
            .collect();
    let by_request: HashMap<&str, &OtpState> = otps.iter().map(|o| (o.request_id.as_str(), o)).collect();

    // Every job accounted for, and as the kind it is.
    for n in 0..profile.jobs {
        let request = request_id(n);
        let outcome = match (by_request.get(request.as_str()), rejections.get(&request)) {
            (Some(otp), None) if ["sent", "delivered", "undelivered"].contains(&otp.delivery.as_str()) => {
                if otp.delivery != final_delivery(n) {
                    report.delivery_not_as_receipts_say += 1;
                }
                match otp.delivery.as_str() {
                    "delivered" => report.delivered += 1,
                    "undelivered" => report.undelivered += 1,
                    _ => {}
                }
                Some(Expect::Sent)
            }
            (Some(otp), None) if otp.delivery == "failed" => Some(Expect::Failed),
            (None, Some(_)) => Some(Expect::Rejected),
            _ => None,
        };
        match outcome {
            Some(Expect::Sent) => report.sent += 1,
            Some(Expect::Failed) => report.failed += 1,
            Some(Expect::Rejected) => report.rejected += 1,
            None => report.lost += 1,
        }
        if outcome.is_some_and(|o| o != Expect::of(n)) {
            report.wrong_outcome += 1;
        }
    }
    report.rejections_recorded_twice = rejections.values().filter(|&&count| count > 1).count();
    // The worker that lived through a restart (no kill follows within 10 s) consumes again.
    for done in &stage.restarts_done {
        let intake: i64 = sqlx::query_scalar(
            "select count(*) from otps where created_at > $1 and created_at < $1 + interval '10 seconds'",
        )
        .bind(done)
        .fetch_one(&harness.pool)
        .await
        .expect("intake after a restart");
        report.restarts_without_intake += usize::from(intake == 0);
    }
    let dead: HashSet<String> = dead_letters
        .iter()
        .filter(|(_, properties)| text_header(properties, otp_courier::worker::dead_letter::REASON_HEADER).is_some())
        .filter_map(|(body, _)| serde_json::from_slice::<Value>(body).ok())
        .filter_map(|job| job["requestId"].as_str().map(str::to_string))
        .collect();
    report.rejected_without_dead_letter = rejections.keys().filter(|r| !dead.contains(*r)).count();

    let pins: HashMap<String, String> = otps
        .iter()
        .map(|o| (OtpId::from_uuid(o.id).to_string(), o.pin()))
        .collect();
    check_sends(&mut report, &stage.provider, &pins, &stage.worker_kills);

    // Workflows: no step after a verification (a step that ran twice is `sends_beyond_bound`).
    report.workflow_jobs = (0..profile.jobs).filter(|&n| has_workflow(n)).count();
    let (fallbacks, verified_first, after): (i64, i64, i64) = sqlx::query_as(
        "select (select count(*) from outbox where app_id = $1 and event_type = 'otp.fallback'),
                (select count(*) from otps where app_id = $1 and status = 'verified' and workflow_step = 0),
                (select count(*) from outbox e join otps o on o.id = e.otp_id
                 where e.app_id = $1 and e.event_type = 'otp.fallback' and e.created_at > o.verified_at)",
    )
    .bind(APP)
    .fetch_one(&harness.pool)
    .await
    .expect("workflow counts");
    report.fallbacks = fallbacks;
    report.verified_in_first_step = verified_first;
    report.steps_after_verification = after;

    // Callbacks: every event delivered, received under its own id, one event per state change.
    let events: Vec<Event> = sqlx::query_as(
        "select id, event_type, state, attempts, payload->'data'->>'requestId' as request_id,
                payload->'data'->>'step' as step
         from outbox where app_id = $1",
    )
    .bind(APP)
    .fetch_all(&harness.pool)
    .await
    .expect("outbox");
    report.events = events.len();
    report.events_undelivered = events.iter().filter(|e| e.state != "delivered").count();
    report.callback_attempts = events.iter().map(|e| i64::from(e.attempts)).sum();
    // A workflow job's steps each change its state: a change is (job, type, step).
    let mut changes: HashMap<(Option<&str>, &str, Option<&str>), usize> = HashMap::new();
    for event in &events {
        *changes
            .entry((
                event.request_id.as_deref(),
                event.event_type.as_str(),
                event.step.as_deref(),
            ))
            .or_default() += 1;
    }
    report.state_changes_recorded_twice = changes.values().filter(|&&count| count > 1).count();
    let kinds: HashSet<(Option<&str>, &str)> = changes.keys().map(|(request, kind, _)| (*request, *kind)).collect();
    report.jobs_without_final_event = (0..profile.jobs)
        .filter(|&n| !kinds.contains(&(Some(request_id(n).as_str()), Expect::of(n).event())))
        .count();
    let callbacks = stage.receiver.state.hits.lock().expect("lock");
    report.callbacks_received = callbacks.len();
    report.bad_signatures = stage.receiver.state.bad_signatures.load(Ordering::SeqCst);
    let ids: HashMap<String, &Event> = events
        .iter()
        .map(|e| (EventId::from_uuid(e.id).to_string(), e))
        .collect();
    let received: HashSet<&str> = callbacks.iter().map(|c| c.webhook_id.as_str()).collect();
    report.callbacks_repeated = callbacks.len() - received.len();
    report.events_missing_callback = ids.keys().filter(|id| !received.contains(id.as_str())).count();
    report.callbacks_with_unknown_id = callbacks
        .iter()
        .filter(|c| {
            ids.get(&c.webhook_id)
                .is_none_or(|e| e.event_type != c.event_type || e.request_id.as_deref() != Some(&c.request_id))
        })
        .count();
    let mut webhook_ids: HashMap<(&str, &str, Option<i64>), HashSet<&str>> = HashMap::new();
    for callback in callbacks.iter() {
        webhook_ids
            .entry((
                callback.request_id.as_str(),
                callback.event_type.as_str(),
                callback.step,
            ))
            .or_default()
            .insert(callback.webhook_id.as_str());
    }
    report.state_changes_with_two_webhook_ids = webhook_ids.values().filter(|ids| ids.len() > 1).count();
    drop(callbacks);

    // No PIN in any log line, in any form a log could carry it.
    let pins: HashSet<String> = pins.into_values().collect();
    let (lines, leaks) = scan_logs(&stage.logs, &pins);
    report.log_lines = lines;
    report.log_lines_with_pin = leaks;
    report
}

/// Provider requests: one PIN per OTP, and a second accepted send only where a kill fell
/// between the first and the last.
fn check_sends(report: &mut Report, provider: &Provider, pins: &HashMap<String, String>, worker_kills: &[Duration]) {
    let hits = provider.hits.lock().expect("lock");
    report.provider_requests = hits.len();
    // Per OTP and channel: a workflow's steps each send once.
    let mut accepted: HashMap<(&str, &str), Vec<Duration>> = HashMap::new();
    for hit in hits.iter() {
        *report.provider_answers.entry(hit.status).or_default() += 1;
        if pins.get(&hit.otp).is_none_or(|pin| hit.text != format!("Code {pin}")) {
            report.wrong_pin += 1;
        }
        if hit.status == 200 {
            accepted
                .entry((hit.otp.as_str(), hit.channel.as_str()))
                .or_default()
                .push(hit.at);
        }
    }
    for times in accepted.values().filter(|times| times.len() > 1) {
        report.accepted_twice += 1;
        let (first, last) = (times[0], times[times.len() - 1]);
        let kills = worker_kills.iter().filter(|&&kill| kill > first && kill < last).count();
        report.sends_beyond_bound += (times.len() - 1).saturating_sub(kills);
    }
}

/// Counts log lines, and those holding a PIN: any 8-character run of letters and digits
/// that, upper-cased, is one of the run's PINs.
fn scan_logs(dir: &Path, pins: &HashSet<String>) -> (usize, usize) {
    let (mut lines, mut leaks) = (0, 0);
    for entry in std::fs::read_dir(dir).expect("log dir").flatten() {
        let text = std::fs::read_to_string(entry.path()).expect("log file");
        for line in text.lines() {
            lines += 1;
            let leaked = line
                .split(|c: char| !c.is_ascii_alphanumeric())
                .any(|token| token.len() == 8 && pins.contains(&token.to_ascii_uppercase()));
            if leaked {
                leaks += 1;
                eprintln!("PIN in {}: {line}", entry.path().display());
            }
        }
    }
    (lines, leaks)
}

fn print_report(report: &Report, profile: &Profile, timeline: &[(f64, String)]) {
    eprintln!("\nchaos run `{}`: {:?}", profile.name, profile);
    eprintln!("faults:");
    for (at, what) in timeline {
        eprintln!("  {at:>6.1}s  {what}");
    }
    let value = serde_json::to_value(report).expect("report");
    eprintln!("| check | value |\n|---|---|");
    if let Value::Object(fields) = value {
        for (name, value) in fields {
            eprintln!("| {name} | {value} |");
        }
    }
}

#[sqlx::test]
async fn no_job_is_lost_and_none_is_sent_twice_beyond_the_kills_that_hit_it(pool: PgPool) {
    let profile = Profile::from_env();
    let mut harness = Harness::new(pool).await;
    let app_key = harness.create_app_with_key(APP).await;
    let secret = harness.webhook_secret(APP, None).await;

    let epoch = Instant::now();
    let (receipts_to_post, receipts_queued) = tokio::sync::mpsc::unbounded_channel();
    let provider = Arc::new(Provider {
        epoch,
        mode: AtomicU8::new(ACCEPT),
        hits: Mutex::default(),
        receipts: receipts_to_post,
    });
    let provider_url = serve_provider(provider.clone()).await;
    let api_port = harness::free_port();
    let receipt_counts = Arc::new(Receipts::default());
    tokio::spawn(post_receipts(
        format!("http://127.0.0.1:{api_port}/v1/receipts/fake"),
        receipts_queued,
        receipt_counts.clone(),
    ));
    let receiver = ReceiverServer::start(Arc::new(Receiver {
        webhook: standardwebhooks::Webhook::new(&secret).expect("secret"),
        hits: Mutex::default(),
        bad_signatures: AtomicUsize::new(0),
    }))
    .await;
    let callback_url = receiver.url();
    // Rejections are called back only to the app's configured URL, never to the job's.
    sqlx::query("update apps set callback_url = $1 where id = $2")
        .bind(&callback_url)
        .bind(APP)
        .execute(&harness.pool)
        .await
        .expect("configure the app's callback URL");

    harness.set("providers.fake.url", json!(provider_url));
    harness.set(
        "providers.fake.body",
        json!({"to": "{{to}}", "text": "{{message}}", "otp": "{{otp_id}}", "channel": "{{channel}}"}),
    );
    harness.set("providers.fake.message_id_pointer", json!("/id"));
    harness.set(
        "providers.fake.receipt",
        json!({"message_id_pointer": "/data/id", "status_pointer": "/data/state",
               "statuses": {"DELIVRD": "delivered", "UNDELIV": "undelivered", "ACK": "sent"},
               "signature_header": "x-signature", "secret": RECEIPT_SECRET}),
    );
    harness.set("api.listen", json!(format!("127.0.0.1:{api_port}")));
    harness.set("receipts.public_url", json!(format!("http://127.0.0.1:{api_port}")));
    harness.set("amqp.prefetch", json!(32));
    harness.set("database.max_connections", json!(10));
    // Longer than a database restart takes here (about 5 s), shorter than the time between a
    // database restart and the next kill (see `schedule`).
    harness.set("worker.lease_seconds", json!(8));
    harness.set("worker.poll_interval_ms", json!(200));
    harness.set(
        "delivery",
        json!({"timeout_ms": 1000, "quick_retries": 2, "quick_retry_min_delay_ms": 50,
               "quick_retry_max_delay_ms": 200, "retry_schedule_seconds": [1, 2, 4, 8, 15, 30]}),
    );
    harness.set(
        "callbacks.retry_schedule_seconds",
        json!([1, 2, 4, 8, 16, 32, 60, 60, 60]),
    );
    harness.set(
        "limits",
        json!({"send_per_phone": {"max": 5, "window_seconds": 600},
               "send_per_app": {"max": 1_000_000, "window_seconds": 1},
               "send_per_country": {"max": 1_000_000, "window_seconds": 3600}}),
    );
    // Sequential numbers, never verified: the guard counts them, with thresholds the run
    // cannot reach, so what it checks is delivery under faults.
    harness.set(
        "fraud",
        json!({"prefix_velocity": {"max": 1_000_000},
               "conversion": {"min_sends": 1_000_000, "country_min_sends": 1_000_000}}),
    );
    let logs = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("chaos-{}", profile.name));
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs).expect("log dir");
    let config = harness.config_file(&logs);
    eprintln!("chaos run `{}`: logs in {}", profile.name, logs.display());
    // The API takes the receipts; it lives through the whole run (the database restarts
    // under it).
    let mut api = spawn_role("api", 1, &config, &logs);
    let stop_verifying = CancellationToken::new();
    let verifier = tokio::spawn(verify_first_steps(
        harness.pool.clone(),
        format!("http://127.0.0.1:{api_port}"),
        app_key,
        stop_verifying.clone(),
    ));

    let mut stage = Stage {
        worker: spawn_role("worker", 1, &config, &logs),
        workers_started: 1,
        dispatcher: spawn_role("dispatcher", 1, &config, &logs),
        dispatchers_started: 1,
        config,
        logs,
        provider,
        receiver,
        worker_kills: Vec::new(),
        restarts_done: Vec::new(),
        timeline: Vec::new(),
    };
    let mut producer = Producer {
        queue: harness.queue.clone(),
        connection: None,
        republished: 0,
    };
    tokio::join!(
        produce(&profile, &mut producer, &callback_url, epoch),
        stage.inflict_all(schedule(&profile), epoch),
    );
    eprintln!(
        "[{:>6.1}s] all jobs published; waiting for them to settle",
        epoch.elapsed().as_secs_f64()
    );
    let deadline = Instant::now() + profile.settle;
    let mut done = false;
    while Instant::now() < deadline {
        if settled(&harness.pool, profile.jobs).await {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let seconds = epoch.elapsed().as_secs_f64();
    stop_verifying.cancel();
    verifier.await.expect("the verifier ends");
    stage.worker.kill().await;
    stage.dispatcher.kill().await;
    api.kill().await;

    harness.reconnect().await;
    let dead_letters = harness.drain_dlq().await;
    let mut report = check(&harness, &profile, &stage, &dead_letters).await;
    report.republished = producer.republished;
    report.receipts_posted = receipt_counts.posted.load(Ordering::SeqCst);
    report.receipts_refused = receipt_counts.refused.load(Ordering::SeqCst);
    report.receipts_given_up = receipt_counts.given_up.load(Ordering::SeqCst);
    report.seconds = seconds;
    print_report(&report, &profile, &stage.timeline);
    let path = stage.logs.join("report.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&report).expect("json")).expect("report written");

    assert!(done, "the run did not settle within {:?}", profile.settle);
    assert_eq!(report.problems(), [], "see the report above and the logs");
    // The faults really happened and were felt.
    assert_eq!(report.worker_kills, profile.worker_kills);
    for status in [0, 429, 503, 400] {
        assert!(
            report.provider_answers.get(&status).is_some_and(|&n| n > 0),
            "no request was answered {status}"
        );
    }
    assert!(
        report.callback_attempts > report.events as i64,
        "no callback had to be retried"
    );
    assert!(report.log_lines > 1000, "the logs were read");
    assert!(
        report.delivered > 0 && report.undelivered > 0 && report.receipts_posted > report.sent,
        "receipts were posted and applied both ways"
    );
    assert!(
        report.fallbacks > 0 && report.verified_in_first_step > 0,
        "workflows moved on, and some were verified before they could"
    );
    harness.finish().await;
}
