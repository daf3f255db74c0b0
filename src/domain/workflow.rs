//! A channel workflow: the channels an OTP's code goes out on, one after another, each
//! with the time it is given before the next starts. Every step sends the same code.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Channel;

/// The most steps a workflow may have.
pub const MAX_STEPS: usize = 4;

/// One step: a channel, and how long it has (without a verification) before the next step
/// starts. A failed delivery or an `undelivered` receipt starts the next step sooner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    pub channel: Channel,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
}

/// A valid workflow: 1 to [`MAX_STEPS`] steps, each timeout 1-1800 s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Workflow(Vec<Step>);

impl Workflow {
    /// Reads `[{"channel": "sms", "timeoutSeconds": 60}, {"channel": "whatsapp"}]`.
    pub fn parse(value: &Value) -> Result<Self, String> {
        let Value::Array(items) = value else {
            return Err("must be an array of steps".into());
        };
        if items.is_empty() || items.len() > MAX_STEPS {
            return Err(format!("must have 1 to {MAX_STEPS} steps"));
        }
        let mut steps = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let Value::Object(fields) = item else {
                return Err(format!("step {index} must be an object"));
            };
            if let Some(unknown) = fields
                .keys()
                .find(|k| !matches!(k.as_str(), "channel" | "timeoutSeconds"))
            {
                return Err(format!(
                    "step {index}: unknown field `{unknown}` (allowed: channel, timeoutSeconds)"
                ));
            }
            let channel = fields
                .get("channel")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("step {index}: `channel` is required"))
                .and_then(|c| Channel::parse(c).map_err(|e| format!("step {index}: {e}")))?;
            let timeout_seconds = match fields.get("timeoutSeconds") {
                None | Some(Value::Null) => None,
                Some(n) => Some(
                    n.as_u64()
                        .filter(|n| (1..=1800).contains(n))
                        .ok_or_else(|| format!("step {index}: timeoutSeconds must be a whole number from 1 to 1800"))?
                        as u32,
                ),
            };
            steps.push(Step {
                channel,
                timeout_seconds,
            });
        }
        Ok(Self(steps))
    }

    pub fn steps(&self) -> &[Step] {
        &self.0
    }

    pub fn first_channel(&self) -> Channel {
        self.0[0].channel
    }

    /// The time the steps before the last may take, at most: the last step starts within
    /// it (the last step's own timeout starts nothing).
    pub fn total_timeout_seconds(&self) -> u32 {
        self.0[..self.0.len() - 1]
            .iter()
            .filter_map(|s| s.timeout_seconds)
            .sum()
    }

    /// Whether every step can start while an OTP of `ttl_seconds` lives: the timeouts
    /// before the last step must end before it, with a tenth of it to spare.
    pub fn fits(&self, ttl_seconds: u32) -> bool {
        u64::from(self.total_timeout_seconds()) * 10 <= u64::from(ttl_seconds) * 9
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_workflow_reads_and_refuses_with_reasons() {
        let workflow = Workflow::parse(&json!([
            {"channel": "sms", "timeoutSeconds": 60}, {"channel": "whatsapp", "timeoutSeconds": 120}, {"channel": "sms", "timeoutSeconds": 30}
        ]))
        .expect("valid");
        assert_eq!(workflow.steps().len(), 3);
        assert_eq!(workflow.first_channel(), Channel::Sms);
        assert_eq!(
            workflow.total_timeout_seconds(),
            180,
            "the last step's timeout starts nothing"
        );
        assert!(workflow.fits(200) && !workflow.fits(199));
        for (bad, why) in [
            (json!([]), "1 to 4"),
            (json!({"channel": "sms"}), "array"),
            (json!([{"channel": "fax"}]), "step 0"),
            (json!([{"channel": "sms", "timeoutSeconds": 0}]), "1 to 1800"),
            (json!([{"channel": "sms", "timeout": 5}]), "unknown field"),
            (json!([{"timeoutSeconds": 5}]), "required"),
            (
                json!([{"channel": "sms"}, {"channel": "sms"}, {"channel": "sms"}, {"channel": "sms"}, {"channel": "sms"}]),
                "1 to 4",
            ),
        ] {
            let error = Workflow::parse(&bad).expect_err("refused");
            assert!(error.contains(why), "{bad}: {error}");
        }
    }
}
