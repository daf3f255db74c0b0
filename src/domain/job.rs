//! The send job (DESIGN, "The send job"): JSON, camelCase, sms.cx field names.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::phone::PhoneError;
use super::{AppId, CallbackUrl, Channel, MaxAttempts, Metadata, PhoneNumber, RequestId, Sender, Ttl};
use crate::message::locale::Locale;
use crate::message::pin::{PinLength, PinType};
use crate::message::template::{Template, TemplateError};

/// Where a job came from, beside its body.
#[derive(Debug, Default, Clone)]
pub struct RawJob<'a> {
    pub body: &'a [u8],
    /// The AMQP `app-id` property, or the app of the HTTP credentials.
    pub app_id: Option<&'a str>,
    /// The AMQP `message-id` property, used as request id when the body has none.
    pub message_id: Option<&'a str>,
    pub max_body_bytes: usize,
    pub allow_http_callbacks: bool,
}

/// A job whose every field is valid. App defaults are applied later, with the app at hand.
#[derive(Debug, Clone)]
pub struct SendJob {
    pub app_id: AppId,
    pub request_id: RequestId,
    pub phone: PhoneNumber,
    pub channel: Channel,
    pub from: Option<Sender>,
    pub language: Option<Locale>,
    pub templates: TemplateSet,
    /// `template_voice` and `template_voice_<lang>`: what a call says.
    pub voice_templates: TemplateSet,
    pub ttl: Option<Ttl>,
    pub max_attempts: MaxAttempts,
    pub pin_type: PinType,
    pub pin_length: PinLength,
    pub callback_url: Option<CallbackUrl>,
    pub metadata: Option<Metadata>,
    /// The channels to try one after another; its first step's channel is `channel`.
    pub workflow: Option<super::Workflow>,
    /// Whether the job named its channel (then an app's default workflow does not apply).
    pub channel_given: bool,
}

/// `template` and the `template_<lang>` variants of a job or an app.
#[derive(Debug, Clone, Default)]
pub struct TemplateSet {
    pub default: Option<Template>,
    pub localized: BTreeMap<Locale, Template>,
}

/// Why a job body is refused. `reason()` is the stable code put on the dead letter.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("body is {size} bytes; the limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("body is not a JSON object: {0}")]
    Malformed(String),
    #[error("{0} is required")]
    Missing(&'static str),
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("phoneNumber: {0}")]
    Phone(#[from] PhoneError),
    #[error("{field}: {source}")]
    Template {
        field: String,
        #[source]
        source: TemplateError,
    },
}

impl JobError {
    pub fn reason(&self) -> &'static str {
        match self {
            JobError::TooLarge { .. } => "body_too_large",
            JobError::Malformed(_) => "malformed_json",
            JobError::Missing(_) => "missing_field",
            JobError::Invalid { .. } => "invalid_field",
            JobError::Phone(_) => "invalid_phone_number",
            JobError::Template { .. } => "invalid_template",
        }
    }

    fn invalid(field: &str, reason: impl Into<String>) -> Self {
        JobError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl SendJob {
    pub fn parse(raw: &RawJob<'_>) -> Result<Self, JobError> {
        if raw.body.len() > raw.max_body_bytes {
            return Err(JobError::TooLarge {
                size: raw.body.len(),
                limit: raw.max_body_bytes,
            });
        }
        let value: Value = serde_json::from_slice(raw.body).map_err(|e| JobError::Malformed(e.to_string()))?;
        let Value::Object(mut fields) = value else {
            return Err(JobError::Malformed("the top level must be an object".into()));
        };
        let app_id = app_id(&mut fields, raw.app_id)?;
        let request_id = match take_str(&mut fields, &["requestId"])?.or_else(|| raw.message_id.map(str::to_string)) {
            Some(given) => RequestId::given(&given).map_err(|e| JobError::invalid("requestId", e))?,
            None => RequestId::derived(&app_id, raw.body),
        };
        let phone = take_str(&mut fields, &["phoneNumber", "recipient"])?.ok_or(JobError::Missing("phoneNumber"))?;
        let channel = parse_opt(&mut fields, "channel", Channel::parse)?;
        let workflow = match fields.remove("workflow") {
            None | Some(Value::Null) => None,
            Some(value) => Some(super::Workflow::parse(&value).map_err(|e| JobError::invalid("workflow", e))?),
        };
        if let (Some(channel), Some(workflow)) = (channel, &workflow) {
            if channel != workflow.first_channel() {
                return Err(JobError::invalid(
                    "channel",
                    "differs from the workflow's first step; give one or make them agree",
                ));
            }
        }
        Ok(SendJob {
            request_id,
            phone: PhoneNumber::parse(&phone)?,
            channel: workflow
                .as_ref()
                .map(super::Workflow::first_channel)
                .or(channel)
                .unwrap_or_default(),
            channel_given: channel.is_some(),
            workflow,
            from: parse_opt(&mut fields, "from", Sender::parse)?,
            language: parse_opt(&mut fields, "language", Locale::parse)?,
            ttl: int_opt(&mut fields, "ttl", Ttl::parse)?,
            max_attempts: int_opt(&mut fields, "maxAttempts", MaxAttempts::parse)?.unwrap_or(MaxAttempts::DEFAULT),
            pin_type: parse_opt(&mut fields, "pinType", PinType::parse)?.unwrap_or_default(),
            pin_length: int_opt(&mut fields, "pinLength", PinLength::parse)?.unwrap_or(PinLength::DEFAULT),
            callback_url: parse_opt(&mut fields, "otpCallbackUrl", |url| {
                CallbackUrl::parse(url, raw.allow_http_callbacks)
            })?,
            metadata: match fields.remove("metadata") {
                None | Some(Value::Null) => None,
                Some(value) => Some(Metadata::parse(value).map_err(|e| JobError::invalid("metadata", e))?),
            },
            voice_templates: voice_templates(&mut fields)?,
            templates: templates(&mut fields)?,
            app_id,
        })
    }
}

fn app_id(fields: &mut Map<String, Value>, context: Option<&str>) -> Result<AppId, JobError> {
    let in_body = take_str(fields, &["appId", "appid"])?;
    let chosen = match (in_body.as_deref(), context) {
        (Some(body), Some(context)) if body != context => {
            return Err(JobError::invalid(
                "appId",
                "differs from the app of the message or credentials",
            ))
        }
        (Some(body), _) => body.to_string(),
        (None, Some(context)) => context.to_string(),
        (None, None) => return Err(JobError::Missing("appId")),
    };
    AppId::parse(&chosen).map_err(|e| JobError::invalid("appId", e))
}

/// `template` and every `template_<lang>` key.
/// `template_voice` and `template_voice_<lang>`, taken out before the message templates.
fn voice_templates(fields: &mut Map<String, Value>) -> Result<TemplateSet, JobError> {
    let mut set = TemplateSet {
        default: parse_template(fields, "template_voice")?,
        localized: BTreeMap::new(),
    };
    let keys: Vec<String> = fields
        .keys()
        .filter(|k| k.starts_with("template_voice_"))
        .cloned()
        .collect();
    for key in keys {
        let locale = Locale::parse(&key["template_voice_".len()..]).map_err(|e| JobError::invalid(&key, e))?;
        if let Some(template) = parse_template(fields, &key)? {
            set.localized.insert(locale, template);
        }
    }
    Ok(set)
}

pub(crate) fn templates(fields: &mut Map<String, Value>) -> Result<TemplateSet, JobError> {
    let mut set = TemplateSet {
        default: parse_template(fields, "template")?,
        localized: BTreeMap::new(),
    };
    let keys: Vec<String> = fields.keys().filter(|k| k.starts_with("template_")).cloned().collect();
    for key in keys {
        let locale = Locale::parse(&key["template_".len()..]).map_err(|e| JobError::invalid(&key, e))?;
        if let Some(template) = parse_template(fields, &key)? {
            set.localized.insert(locale, template);
        }
    }
    Ok(set)
}

fn parse_template(fields: &mut Map<String, Value>, key: &str) -> Result<Option<Template>, JobError> {
    let Some(source) = take_str(fields, &[key])? else {
        return Ok(None);
    };
    Template::parse(&source).map(Some).map_err(|source| JobError::Template {
        field: key.to_string(),
        source,
    })
}

/// Removes a field given under any of `names` (a name and its aliases); `null` counts as
/// absent. A field given under two names with different values is refused, naming both:
/// picking one would send to a number, or for an app, the producer may not have meant.
fn take_str(fields: &mut Map<String, Value>, names: &[&str]) -> Result<Option<String>, JobError> {
    let mut found: Option<(&str, String)> = None;
    for name in names {
        let value = match fields.remove(*name) {
            None | Some(Value::Null) => continue,
            Some(Value::String(s)) => s,
            Some(_) => return Err(JobError::invalid(name, "must be a string")),
        };
        match &found {
            Some((first, kept)) if *kept != value => {
                return Err(JobError::invalid(
                    first,
                    format!("`{first}` and `{name}` name the same field with different values; give one"),
                ))
            }
            Some(_) => {}
            None => found = Some((name, value)),
        }
    }
    Ok(found.map(|(_, value)| value))
}

fn parse_opt<T>(
    fields: &mut Map<String, Value>,
    name: &str,
    parse: impl FnOnce(&str) -> Result<T, &'static str>,
) -> Result<Option<T>, JobError> {
    take_str(fields, &[name])?
        .map(|s| parse(&s).map_err(|e| JobError::invalid(name, e)))
        .transpose()
}

fn int_opt<T>(
    fields: &mut Map<String, Value>,
    name: &str,
    parse: impl FnOnce(i64) -> Result<T, &'static str>,
) -> Result<Option<T>, JobError> {
    match fields.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            let n = n
                .as_i64()
                .ok_or_else(|| JobError::invalid(name, "must be a whole number"))?;
            parse(n).map(Some).map_err(|e| JobError::invalid(name, e))
        }
        Some(_) => Err(JobError::invalid(name, "must be a number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(body: Value) -> Result<SendJob, JobError> {
        let bytes = serde_json::to_vec(&body).expect("json");
        SendJob::parse(&RawJob {
            body: &bytes,
            max_body_bytes: 65536,
            ..RawJob::default()
        })
    }

    #[test]
    fn a_full_job_parses_with_aliases_and_localized_templates() {
        let job = parse(json!({
            "appid": "shop", "requestId": "r-1", "recipient": "+33612345678", "channel": "whatsapp",
            "from": "Shop", "language": "fr", "template": "Code {{pin}}", "template_fr": "Code : {{pin}}",
            "template_pt_BR": "Código {{pin}}", "ttl": 600, "maxAttempts": 3, "pinType": "letters",
            "pinLength": 8, "otpCallbackUrl": "https://example.com/cb", "metadata": {"user": 7}
        }))
        .expect("valid job");
        assert_eq!(job.app_id.as_str(), "shop");
        assert_eq!(job.request_id.as_str(), "r-1");
        assert_eq!(job.channel, Channel::Whatsapp);
        assert_eq!(job.ttl.map(|t| t.seconds()), Some(600));
        assert_eq!(job.pin_type, PinType::Letters);
        let langs: Vec<_> = job.templates.localized.keys().map(Locale::as_str).collect();
        assert_eq!(langs, ["fr", "pt-BR"]);
    }

    #[test]
    fn defaults_apply_and_a_missing_request_id_is_derived_from_the_body() {
        let job = parse(json!({"appId": "shop", "phoneNumber": "+14155550123"})).expect("valid");
        assert_eq!(job.channel, Channel::Sms);
        assert_eq!(job.pin_length, PinLength::DEFAULT);
        assert_eq!(job.max_attempts, MaxAttempts::DEFAULT);
        assert!(job.request_id.is_derived());
    }

    #[test]
    fn each_bad_field_is_named_with_a_stable_reason() {
        let cases = [
            (json!({"phoneNumber": "+33612345678"}), "missing_field", "appId"),
            (json!({"appId": "shop"}), "missing_field", "phoneNumber"),
            (
                json!({"appId": "shop", "phoneNumber": "12"}),
                "invalid_phone_number",
                "phoneNumber",
            ),
            (
                json!({"appId": "shop", "phoneNumber": "+33612345678", "template": "hi"}),
                "invalid_template",
                "template",
            ),
            (
                json!({"appId": "shop", "phoneNumber": "+33612345678", "template_fr": "{{pin}} {{x}}"}),
                "invalid_template",
                "template_fr",
            ),
            (
                json!({"appId": "shop", "phoneNumber": "+33612345678", "ttl": 5}),
                "invalid_field",
                "ttl",
            ),
            (
                json!({"appId": "shop", "phoneNumber": "+33612345678", "ttl": "300"}),
                "invalid_field",
                "ttl",
            ),
            (
                json!({"appId": "shop", "phoneNumber": "+33612345678", "channel": "fax"}),
                "invalid_field",
                "channel",
            ),
            (
                json!({"appId": "shop", "phoneNumber": "+33612345678", "template_??": "{{pin}}"}),
                "invalid_field",
                "template_??",
            ),
            (
                json!({"appId": "sh op", "phoneNumber": "+33612345678"}),
                "invalid_field",
                "appId",
            ),
        ];
        for (body, reason, field) in cases {
            let error = parse(body.clone()).expect_err("refused");
            assert_eq!(error.reason(), reason, "{body}");
            assert!(error.to_string().contains(field), "{error} should name {field}");
        }
    }

    #[test]
    fn size_and_syntax_are_checked_before_anything_else() {
        let big = vec![b' '; 70_000];
        let error = SendJob::parse(&RawJob {
            body: &big,
            max_body_bytes: 65536,
            ..RawJob::default()
        })
        .expect_err("too big");
        assert_eq!(error.reason(), "body_too_large");
        for body in [&b"{"[..], b"[]", b"\xff\xfe", b"null"] {
            let error = SendJob::parse(&RawJob {
                body,
                max_body_bytes: 65536,
                ..RawJob::default()
            })
            .expect_err("bad");
            assert_eq!(error.reason(), "malformed_json");
        }
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let error = SendJob::parse(&RawJob {
            body: deep.as_bytes(),
            max_body_bytes: 65536,
            ..RawJob::default()
        });
        assert_eq!(error.expect_err("too deep").reason(), "malformed_json");
    }

    #[test]
    fn the_app_comes_from_the_context_and_must_not_contradict_it() {
        let body = br#"{"phoneNumber": "+33612345678"}"#;
        let raw = RawJob {
            body,
            app_id: Some("shop"),
            message_id: Some("m-1"),
            max_body_bytes: 65536,
            ..RawJob::default()
        };
        let job = SendJob::parse(&raw).expect("valid");
        assert_eq!(job.app_id.as_str(), "shop");
        assert_eq!(job.request_id.as_str(), "m-1");
        let body = br#"{"appId": "bank", "phoneNumber": "+33612345678"}"#;
        let error = SendJob::parse(&RawJob { body, ..raw }).expect_err("mismatch");
        assert_eq!(error.reason(), "invalid_field");
    }
}

/// Property tests: whatever a producer publishes, parsing ends in a job or a reasoned
/// refusal, never a panic, and looks at no more than the size limit allows.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::collection::{btree_map, vec};
    use proptest::prelude::*;

    const LIMIT: usize = 4096;

    fn parse(body: &[u8]) -> Result<SendJob, JobError> {
        SendJob::parse(&RawJob {
            body,
            max_body_bytes: LIMIT,
            allow_http_callbacks: true,
            ..RawJob::default()
        })
    }

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".{0,40}".prop_map(Value::from),
            "\\+[0-9]{1,16}".prop_map(Value::from),
            "[^{}]{0,10}\\{\\{ ?(pin|from|ttl_minutes|x)? ?\\}?\\}?.{0,10}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..6).prop_map(Value::Array),
                btree_map(".{0,12}", inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Objects made of the job's own field names (and a few others), holding anything.
    fn job_shaped() -> impl Strategy<Value = Value> {
        let name = prop_oneof![
            Just("appId".to_string()),
            Just("appid".to_string()),
            Just("phoneNumber".to_string()),
            Just("recipient".to_string()),
            Just("requestId".to_string()),
            Just("channel".to_string()),
            Just("from".to_string()),
            Just("language".to_string()),
            Just("template".to_string()),
            "template_[a-zA-Z_?]{0,6}",
            Just("ttl".to_string()),
            Just("maxAttempts".to_string()),
            Just("pinType".to_string()),
            Just("pinLength".to_string()),
            Just("otpCallbackUrl".to_string()),
            Just("metadata".to_string()),
            "[a-z]{1,8}",
        ];
        btree_map(name, any_json(), 0..12).prop_map(|m| Value::Object(m.into_iter().collect()))
    }

    proptest! {
        #[test]
        fn any_bytes_end_in_a_job_or_a_reason(body in vec(any::<u8>(), 0..2 * LIMIT)) {
            match parse(&body) {
                Ok(_) => prop_assert!(body.len() <= LIMIT),
                Err(error) => prop_assert!(!error.reason().is_empty() && !error.to_string().is_empty()),
            }
        }

        #[test]
        fn job_shaped_objects_end_in_a_job_or_a_reason(job in job_shaped()) {
            let body = serde_json::to_vec(&job).expect("json");
            match parse(&body) {
                Ok(parsed) => {
                    prop_assert!(body.len() <= LIMIT);
                    prop_assert!(parsed.request_id.as_str().len() <= RequestId::MAX_LEN);
                    let templates = parsed.templates.default.iter().chain(parsed.templates.localized.values());
                    for template in templates {
                        prop_assert!(template.source().contains("pin"));
                    }
                }
                Err(error) => prop_assert!(!error.reason().is_empty()),
            }
        }

        #[test]
        fn a_body_over_the_limit_is_refused_unread(extra in 1usize..LIMIT, byte in any::<u8>()) {
            let body = vec![byte; LIMIT + extra];
            let error = parse(&body).expect_err("too large");
            prop_assert_eq!(error.reason(), "body_too_large");
        }

        #[test]
        fn nesting_at_any_depth_is_refused_not_a_stack_overflow(depth in 129usize..LIMIT / 2, object in any::<bool>()) {
            let (open, close) = if object { (r#"{"a":"#, "}") } else { ("[", "]") };
            let nested = format!("{}1{}", open.repeat(depth), close.repeat(depth));
            let body = format!(r#"{{"appId":"shop","phoneNumber":"+33612345678","metadata":{nested}}}"#);
            if let Err(error) = parse(body.as_bytes()) {
                prop_assert!(["malformed_json", "body_too_large"].contains(&error.reason()), "{}", error);
            } else {
                prop_assert!(false, "a {depth}-deep body parsed");
            }
        }
    }
}
