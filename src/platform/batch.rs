//! Group commit: tasks that each need one small write hand it to a single writer task,
//! which runs whatever has gathered as one statement or transaction. Under load a burst of
//! jobs then costs one round trip and one WAL flush instead of one each; when the process
//! is idle a request runs alone at once, so nothing waits for a batch to fill.
//!
//! A batch that fails on a row's own data (SQLSTATE class 22 or 23) is run again one
//! request at a time, so one job the database cannot store fails only itself. Any other
//! failure (a lost connection, a restart) answers every request of the batch with it. A
//! batch that panics (a bug) is also run again one request at a time, so only the request
//! that sets it off fails, and the writer goes on.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// One kind of write that can be done for many requests at once.
pub trait Batch: Send + Sync + 'static {
    type Item: Send + Sync + 'static;
    type Output: Send + 'static;

    /// Runs `items` as one batch; the outputs answer the items, in order, one each. A run
    /// that panics must leave nothing half-done (an open transaction rolls back when
    /// dropped): its items are run again.
    fn run(&self, items: &[Self::Item]) -> impl Future<Output = Result<Vec<Self::Output>, sqlx::Error>> + Send;
}

/// Why a request got no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BatchError {
    /// The batch it was part of failed; the error is shared by every request in it.
    #[error(transparent)]
    Database(Arc<sqlx::Error>),
    /// The writer stopped (the process is shutting down).
    #[error("the batch writer stopped")]
    Stopped,
    /// Writing this request panicked, alone as in its batch: a bug its data sets off. The
    /// writer logged it and goes on with the next batch.
    #[error("writing it panicked")]
    Panicked,
}

impl BatchError {
    /// Whether retrying cannot help: the request's own data is what the database refused,
    /// or what made writing it panic.
    pub fn is_permanent(&self) -> bool {
        match self {
            BatchError::Database(error) => crate::platform::db::is_data_error(error),
            BatchError::Panicked => true,
            BatchError::Stopped => false,
        }
    }
}

type Answer<B> = oneshot::Sender<Result<<B as Batch>::Output, BatchError>>;

/// The handle requests are submitted through. Cheap to clone; the writer ends once every
/// handle is dropped and what was queued is written.
pub struct Batcher<B: Batch> {
    queue: mpsc::Sender<(B::Item, Answer<B>)>,
}

impl<B: Batch> Clone for Batcher<B> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

impl<B: Batch> std::fmt::Debug for Batcher<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").finish_non_exhaustive()
    }
}

/// Requests written per batch at most: a broker prefetch's worth of jobs, while one
/// statement's arrays stay small.
pub const MAX_BATCH: usize = 512;

/// How long a batch may take before its requests are answered with a timeout. A batch
/// normally takes milliseconds; a connection that died without a reset would otherwise
/// hold every request of the process behind it until TCP gives up, well past the delivery
/// lease, after which another process would send the same messages again.
const RUN_TIMEOUT: Duration = Duration::from_secs(10);

impl<B: Batch> Batcher<B> {
    /// Starts the writer, which takes at most [`MAX_BATCH`] requests per batch.
    pub fn spawn(batch: B) -> (Self, JoinHandle<()>) {
        let (queue, incoming) = mpsc::channel(MAX_BATCH * 4);
        (Self { queue }, tokio::spawn(write(batch, incoming, MAX_BATCH)))
    }

    /// Submits one request and waits for its batch to be written.
    pub async fn submit(&self, item: B::Item) -> Result<B::Output, BatchError> {
        let (answer, answered) = oneshot::channel();
        self.queue.send((item, answer)).await.map_err(|_| BatchError::Stopped)?;
        answered.await.map_err(|_| BatchError::Stopped)?
    }
}

async fn write<B: Batch>(batch: B, mut incoming: mpsc::Receiver<(B::Item, Answer<B>)>, max: usize) {
    let mut gathered = Vec::with_capacity(max);
    while incoming.recv_many(&mut gathered, max).await > 0 {
        let (items, answers): (Vec<_>, Vec<_>) = gathered.drain(..).unzip();
        match guarded(&batch, &items).await {
            Ok(Ok(outputs)) => {
                for (answer, output) in answers.into_iter().zip(outputs) {
                    let _ = answer.send(Ok(output));
                }
            }
            Ok(Err(error)) if items.len() > 1 && crate::platform::db::is_data_error(&error) => {
                tracing::warn!(%error, count = items.len(), "a batch was refused for a row's data; writing its rows one by one");
                one_by_one(&batch, items, answers).await;
            }
            // Logged by `guarded`; alone, the request that sets the bug off fails by itself.
            Err(_) if items.len() > 1 => one_by_one(&batch, items, answers).await,
            Ok(Err(error)) => {
                let shared = Arc::new(error);
                for answer in answers {
                    let _ = answer.send(Err(BatchError::Database(shared.clone())));
                }
            }
            Err(panicked) => {
                for answer in answers {
                    let _ = answer.send(Err(panicked.clone()));
                }
            }
        }
    }
}

async fn one_by_one<B: Batch>(batch: &B, items: Vec<B::Item>, answers: Vec<Answer<B>>) {
    for (item, answer) in items.into_iter().zip(answers) {
        let _ = answer.send(run_alone(batch, item).await);
    }
}

async fn run_alone<B: Batch>(batch: &B, item: B::Item) -> Result<B::Output, BatchError> {
    let outputs = guarded(batch, std::slice::from_ref(&item)).await??;
    outputs.into_iter().next().ok_or(BatchError::Stopped)
}

/// [`run`], with a panic caught and logged, so that one bad batch does not stop the writer
/// and leave every later request of the process answered [`BatchError::Stopped`].
async fn guarded<B: Batch>(batch: &B, items: &[B::Item]) -> Result<Result<Vec<B::Output>, sqlx::Error>, BatchError> {
    AssertUnwindSafe(run(batch, items)).catch_unwind().await.map_err(|_| {
        tracing::error!(
            count = items.len(),
            "a batch panicked; a batch of several is run again one request at a time"
        );
        BatchError::Panicked
    })
}

/// Runs one batch within [`RUN_TIMEOUT`]; a batch cut off fails like a lost connection.
async fn run<B: Batch>(batch: &B, items: &[B::Item]) -> Result<Vec<B::Output>, sqlx::Error> {
    tokio::time::timeout(RUN_TIMEOUT, batch.run(items))
        .await
        .unwrap_or_else(|_| {
            let message = format!("a batch took longer than {RUN_TIMEOUT:?}");
            Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                message,
            )))
        })
}

impl From<sqlx::Error> for BatchError {
    fn from(error: sqlx::Error) -> Self {
        BatchError::Database(Arc::new(error))
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use tokio::sync::Semaphore;

    use super::*;

    /// A refusal with the SQLSTATE PostgreSQL gives a value it cannot store.
    #[derive(Debug, thiserror::Error)]
    #[error("unsupported Unicode escape sequence")]
    struct Unstorable;

    impl sqlx::error::DatabaseError for Unstorable {
        fn message(&self) -> &str {
            "unsupported Unicode escape sequence"
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some("22P05".into())
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    /// Doubles numbers; refuses a batch holding a negative one for its data, or any batch
    /// while `down`; panics on 13. Each batch waits for a permit from `gate`, so a test decides when
    /// batches run, and records its size.
    struct Doubler {
        gate: Arc<Semaphore>,
        entered: Arc<AtomicUsize>,
        sizes: Arc<Mutex<Vec<usize>>>,
        down: bool,
    }

    impl Batch for Doubler {
        type Item = i64;
        type Output = i64;

        async fn run(&self, items: &[i64]) -> Result<Vec<i64>, sqlx::Error> {
            self.entered.fetch_add(1, Ordering::SeqCst);
            self.gate.acquire().await.expect("gate").forget();
            self.sizes.lock().expect("sizes").push(items.len());
            if self.down {
                return Err(sqlx::Error::PoolTimedOut);
            }
            if items.iter().any(|n| *n < 0) {
                return Err(sqlx::Error::Database(Box::new(Unstorable)));
            }
            assert!(!items.contains(&13), "thirteen");
            Ok(items.iter().map(|n| n * 2).collect())
        }
    }

    struct Fixture {
        batcher: Batcher<Doubler>,
        gate: Arc<Semaphore>,
        entered: Arc<AtomicUsize>,
        sizes: Arc<Mutex<Vec<usize>>>,
    }

    fn fixture(down: bool) -> Fixture {
        let (gate, sizes) = (Arc::new(Semaphore::new(0)), Arc::new(Mutex::new(Vec::new())));
        let entered = Arc::new(AtomicUsize::new(0));
        let doubler = Doubler {
            gate: gate.clone(),
            entered: entered.clone(),
            sizes: sizes.clone(),
            down,
        };
        let (batcher, _) = Batcher::spawn(doubler);
        Fixture {
            batcher,
            gate,
            entered,
            sizes,
        }
    }

    /// Submits 0 and, while its batch is held at the gate, `items`; then lets every batch
    /// through. Answers the 0 and `items`, in submission order.
    async fn submit_while_busy(fixture: &Fixture, items: &[i64]) -> Vec<Result<i64, BatchError>> {
        let started = fixture.entered.load(Ordering::SeqCst);
        let first = tokio::spawn({
            let batcher = fixture.batcher.clone();
            async move { batcher.submit(0).await }
        });
        wait_for(|| fixture.entered.load(Ordering::SeqCst) == started + 1).await;
        let mut tasks = vec![first];
        for item in items {
            let (batcher, item) = (fixture.batcher.clone(), *item);
            tasks.push(tokio::spawn(async move { batcher.submit(item).await }));
        }
        wait_for(|| fixture.batcher.queue.capacity() == MAX_BATCH * 4 - items.len()).await;
        fixture.gate.add_permits(items.len() + 2);
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.expect("task"));
        }
        answers
    }

    async fn wait_for(condition: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !condition() {
            assert!(tokio::time::Instant::now() < deadline, "condition not met within 5 s");
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn requests_that_arrive_while_a_batch_runs_are_written_together_and_answered_in_order() {
        let fixture = fixture(false);
        let answers = submit_while_busy(&fixture, &[1, 2, 3, 4, 5]).await;
        let answers: Vec<i64> = answers.into_iter().map(|a| a.expect("answered")).collect();
        assert_eq!(answers, [0, 2, 4, 6, 8, 10]);
        assert_eq!(*fixture.sizes.lock().expect("sizes"), [1, 5]);
    }

    #[tokio::test]
    async fn a_row_the_database_refuses_fails_only_its_own_request() {
        let fixture = fixture(false);
        let answers = submit_while_busy(&fixture, &[1, -1, 3]).await;
        assert_eq!(answers[1].as_ref().expect("first of the batch"), &2);
        assert!(
            answers[2].as_ref().is_err_and(BatchError::is_permanent),
            "{:?}",
            answers[2]
        );
        assert_eq!(answers[3].as_ref().expect("third of the batch"), &6);
        // The batch of three, then each of its rows alone.
        assert_eq!(*fixture.sizes.lock().expect("sizes"), [1, 3, 1, 1, 1]);
    }

    #[tokio::test]
    async fn a_failed_batch_answers_every_request_with_its_error_and_may_be_retried() {
        let fixture = fixture(true);
        fixture.gate.add_permits(1);
        let alone = fixture.batcher.submit(1).await;
        assert!(alone.is_err_and(|e| !e.is_permanent()));
        let answers = submit_while_busy(&fixture, &[1, 2]).await;
        assert!(answers.iter().all(|a| a.as_ref().is_err_and(|e| !e.is_permanent())));
        assert_eq!(*fixture.sizes.lock().expect("sizes"), [1, 1, 2], "no row-by-row rerun");
    }

    #[tokio::test]
    async fn a_request_that_makes_its_batch_panic_fails_alone_and_the_writer_goes_on() {
        let fixture = fixture(false);
        let answers = submit_while_busy(&fixture, &[1, 13, 3]).await;
        assert_eq!(answers[0].as_ref().expect("the batch before"), &0);
        assert_eq!(answers[1].as_ref().expect("first of the batch"), &2);
        assert!(
            matches!(&answers[2], Err(e @ BatchError::Panicked) if e.is_permanent()),
            "{answers:?}"
        );
        assert_eq!(answers[3].as_ref().expect("third of the batch"), &6);
        fixture.gate.add_permits(1);
        assert_eq!(fixture.batcher.submit(2).await.expect("the writer is alive"), 4);
        // The batch of three, each of its rows alone, then the next request.
        assert_eq!(*fixture.sizes.lock().expect("sizes"), [1, 3, 1, 1, 1, 1]);
    }
}
