//! Group commit: tasks that each need one small write hand it to a single writer task,
//! which runs whatever has gathered as one statement or transaction. Under load a burst of
//! jobs then costs one round trip and one WAL flush instead of one each; when the process
//! is idle a request runs alone at once, so nothing waits for a batch to fill.
//!
//! A batch that fails on a row's own data (SQLSTATE class 22 or 23) is run again one
//! request at a time, so one job the database cannot store fails only itself. Any other
//! failure (a lost connection, a restart) answers every request of the batch with it.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// One kind of write that can be done for many requests at once.
pub trait Batch: Send + Sync + 'static {
    type Item: Send + 'static;
    type Output: Send + 'static;

    /// Runs `items` as one batch; the outputs answer the items, in order, one each.
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
}

impl BatchError {
    /// Whether retrying cannot help: the request's own data is what the database refused.
    pub fn is_permanent(&self) -> bool {
        matches!(self, BatchError::Database(error) if crate::db::is_data_error(error))
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

/// Requests written per batch at most: a broker prefetch's worth of jobs and more, while
/// one statement's arrays stay small.
pub const MAX_BATCH: usize = 512;

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
        match batch.run(&items).await {
            Ok(outputs) => {
                for (answer, output) in answers.into_iter().zip(outputs) {
                    let _ = answer.send(Ok(output));
                }
            }
            Err(error) if items.len() > 1 && crate::db::is_data_error(&error) => {
                tracing::warn!(%error, count = items.len(), "a batch was refused for a row's data; writing its rows one by one");
                for (item, answer) in items.into_iter().zip(answers) {
                    let _ = answer.send(run_alone(&batch, item).await);
                }
            }
            Err(error) => {
                let shared = Arc::new(error);
                for answer in answers {
                    let _ = answer.send(Err(BatchError::Database(shared.clone())));
                }
            }
        }
    }
}

async fn run_alone<B: Batch>(batch: &B, item: B::Item) -> Result<B::Output, BatchError> {
    let outputs = batch
        .run(std::slice::from_ref(&item))
        .await
        .map_err(|error| BatchError::Database(Arc::new(error)))?;
    outputs.into_iter().next().ok_or(BatchError::Stopped)
}

impl From<sqlx::Error> for BatchError {
    fn from(error: sqlx::Error) -> Self {
        BatchError::Database(Arc::new(error))
    }
}
