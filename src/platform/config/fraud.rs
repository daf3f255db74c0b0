//! The SMS-pumping guard's settings (`[fraud]`): a mode per rule, each rule's thresholds,
//! and the safe-list. Apps may override a rule's mode (`apps.fraud_modes`).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

use super::{in_range, ConfigError};
use crate::domain::NumberKind;

/// What a rule does with a send it judges risky.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Refuse it (`otp.rejected`, reason `fraud_suspected`).
    Enforce,
    /// Send it anyway and record what would have been refused.
    Shadow,
    /// Do not judge.
    Off,
}

impl Mode {
    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Shadow => "shadow",
            Mode::Off => "off",
        }
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "enforce" => Ok(Mode::Enforce),
            "shadow" => Ok(Mode::Shadow),
            "off" => Ok(Mode::Off),
            other => Err(format!("`{other}` is not a mode: enforce, shadow or off")),
        }
    }
}

/// The guard's rules, by the name reasons and settings use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    NumberTypes,
    PrefixVelocity,
    Conversion,
}

impl Rule {
    pub const ALL: [Rule; 3] = [Rule::NumberTypes, Rule::PrefixVelocity, Rule::Conversion];

    pub fn as_str(&self) -> &'static str {
        match self {
            Rule::NumberTypes => "number_types",
            Rule::PrefixVelocity => "prefix_velocity",
            Rule::Conversion => "conversion",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Rule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Rule::ALL
            .into_iter()
            .find(|rule| rule.as_str() == s)
            .ok_or_else(|| format!("`{s}` is not a rule: number_types, prefix_velocity or conversion"))
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct FraudConfig {
    /// Numbers or E.164 prefixes (`+4477009000`, `+1555`) no rule judges or counts.
    pub safe_list: Vec<String>,
    /// How long the guard's statements may wait before the send goes on unjudged.
    pub timeout_ms: u64,
    pub number_types: NumberTypesConfig,
    pub prefix_velocity: VelocityConfig,
    pub conversion: ConversionConfig,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NumberTypesConfig {
    pub mode: Mode,
    /// Kinds of line refused, by [`NumberKind::as_str`].
    pub refuse: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct VelocityConfig {
    pub mode: Mode,
    pub max: u32,
    pub window_seconds: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ConversionConfig {
    pub mode: Mode,
    pub min_sends: u32,
    pub country_min_sends: u32,
    /// Verified sends per hundred below which a prefix or country is blocked.
    pub min_percent: u32,
    pub window_seconds: u32,
    /// Sends younger than this are not yet counted against a prefix: their codes may still
    /// be on their way to being typed in.
    pub settle_seconds: u32,
    pub block_seconds: u32,
    pub max_block_seconds: u32,
}

impl FraudConfig {
    /// A rule's mode for an app, the app's own choice first.
    pub fn mode(&self, rule: Rule, app: &BTreeMap<Rule, Mode>) -> Mode {
        app.get(&rule).copied().unwrap_or(match rule {
            Rule::NumberTypes => self.number_types.mode,
            Rule::PrefixVelocity => self.prefix_velocity.mode,
            Rule::Conversion => self.conversion.mode,
        })
    }

    /// The kinds of line `number_types` refuses.
    pub fn refused_kinds(&self) -> Vec<NumberKind> {
        self.number_types
            .refuse
            .iter()
            .filter_map(|k| NumberKind::parse(k))
            .collect()
    }

    /// Whether `e164` is on the safe-list, as a number or under a prefix.
    pub fn is_safe(&self, e164: &str) -> bool {
        self.safe_list.iter().any(|entry| e164.starts_with(entry.as_str()))
    }

    /// The length of the counting buckets: a sixtieth of the shorter window, 1 s to 60 s,
    /// so a window slides in steps of at most a sixtieth of itself.
    pub fn bucket_seconds(&self) -> u32 {
        (self.prefix_velocity.window_seconds.min(self.conversion.window_seconds) / 60).clamp(1, 60)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for entry in &self.safe_list {
            let digits = entry.strip_prefix('+').unwrap_or("");
            if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ConfigError::Invalid {
                    key: "fraud.safe_list".into(),
                    reason: format!("`{entry}` is not an E.164 number or prefix (+ and 1 to 15 digits)"),
                });
            }
        }
        in_range("fraud.timeout_ms", self.timeout_ms, 10..=10_000)?;
        if let Some(unknown) = self.number_types.refuse.iter().find(|k| NumberKind::parse(k).is_none()) {
            let known: Vec<&str> = NumberKind::ALL.iter().map(NumberKind::as_str).collect();
            return Err(ConfigError::Invalid {
                key: "fraud.number_types.refuse".into(),
                reason: format!("`{unknown}` is not a kind of line: {}", known.join(", ")),
            });
        }
        let velocity = &self.prefix_velocity;
        in_range("fraud.prefix_velocity.max", velocity.max, 1..=1_000_000)?;
        in_range(
            "fraud.prefix_velocity.window_seconds",
            velocity.window_seconds,
            60..=86_400,
        )?;
        let conversion = &self.conversion;
        in_range("fraud.conversion.min_sends", conversion.min_sends, 1..=1_000_000)?;
        in_range(
            "fraud.conversion.country_min_sends",
            conversion.country_min_sends,
            1..=1_000_000,
        )?;
        in_range("fraud.conversion.min_percent", conversion.min_percent, 1..=100)?;
        in_range(
            "fraud.conversion.window_seconds",
            conversion.window_seconds,
            60..=86_400,
        )?;
        in_range(
            "fraud.conversion.settle_seconds",
            conversion.settle_seconds,
            0..=conversion.window_seconds / 2,
        )?;
        // After a block, only the buckets that began after it count: a block shorter than
        // a bucket would count the sends that called for it again.
        in_range(
            "fraud.conversion.block_seconds",
            conversion.block_seconds,
            self.bucket_seconds()..=2_592_000,
        )?;
        in_range(
            "fraud.conversion.max_block_seconds",
            conversion.max_block_seconds,
            conversion.block_seconds..=31_536_000,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> FraudConfig {
        super::super::Config::load(None).expect("defaults").fraud
    }

    #[test]
    fn an_app_choice_wins_over_the_default_mode() {
        let config = config();
        let app = BTreeMap::from([(Rule::Conversion, Mode::Shadow)]);
        assert_eq!(config.mode(Rule::Conversion, &app), Mode::Shadow);
        assert_eq!(config.mode(Rule::NumberTypes, &app), Mode::Enforce);
    }

    #[test]
    fn the_safe_list_holds_numbers_and_prefixes() {
        let config = FraudConfig {
            safe_list: vec!["+15550100".into()],
            ..config()
        };
        assert!(config.is_safe("+15550100123"));
        assert!(!config.is_safe("+15550200123"));
    }

    #[test]
    fn a_block_shorter_than_a_bucket_is_refused() {
        let mut config = config();
        config.conversion.block_seconds = 59;
        let error = config.validate().expect_err("59 s < 60 s buckets").to_string();
        assert!(
            error.contains("fraud.conversion.block_seconds") && error.contains("60 to"),
            "{error}"
        );
        config.conversion.window_seconds = 600;
        config.validate().expect("10 s buckets");
    }

    #[test]
    fn buckets_are_a_sixtieth_of_the_shorter_window() {
        let mut config = config();
        config.prefix_velocity.window_seconds = 600;
        config.conversion.window_seconds = 3600;
        assert_eq!(config.bucket_seconds(), 10);
        config.prefix_velocity.window_seconds = 86_400;
        config.conversion.window_seconds = 86_400;
        assert_eq!(config.bucket_seconds(), 60);
    }
}
