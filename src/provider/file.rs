//! Development provider: appends each message as a JSON line to a local file. The demo
//! reads the code from there, as a person would from their phone.

use std::path::PathBuf;

use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use super::{Accepted, Message, SendError};
use crate::platform::config::FileConfig;

#[derive(Debug)]
pub struct FileSink {
    path: PathBuf,
    // One writer at a time, so concurrent lines never interleave.
    lock: Mutex<()>,
}

impl FileSink {
    pub(super) fn new(config: FileConfig) -> Self {
        Self {
            path: config.path,
            lock: Mutex::new(()),
        }
    }

    pub(super) async fn send(&self, message: &Message<'_>) -> Result<Accepted, SendError> {
        let mut line = serde_json::to_vec(&json!({
            "otpId": message.otp_id,
            "to": message.to,
            "channel": message.channel,
            "from": message.from,
            "locale": message.locale,
            "text": message.text,
        }))
        .map_err(|e| SendError::Config(e.to_string()))?;
        line.push(b'\n');
        let _guard = self.lock.lock().await;
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .await?;
        file.write_all(&line).await?;
        file.flush().await?;
        Ok(Accepted { message_id: None })
    }
}
