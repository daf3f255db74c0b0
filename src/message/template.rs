//! Message templates: `{{pin}}` (or, for voice, `{{pin_spoken}}`: the digits one by one,
//! `4, 8, 1, 5`, so text-to-speech does not read a number) is required; `{{ttl_minutes}}`
//! and `{{from}}` are optional; anything else in braces is an error, so a typo never
//! reaches a user's phone.

use crate::message::pin::Pin;

/// A parsed template. The source text is kept for storage; it holds no PIN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Pin,
    PinSpoken,
    TtlMinutes,
    From,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("template is empty")]
    Empty,
    #[error("template is longer than {max} characters")]
    TooLong { max: usize },
    #[error("template must contain {{{{pin}}}} or {{{{pin_spoken}}}}")]
    NoPin,
    #[error("unknown placeholder {{{{{0}}}}}: allowed are pin, pin_spoken, ttl_minutes and from")]
    UnknownPlaceholder(String),
    #[error("a {{{{ is not closed by }}}}")]
    Unclosed,
    #[error("template contains a control character other than a line break")]
    ControlCharacter,
}

/// What a template is filled with.
pub struct Values<'a> {
    pub pin: &'a Pin,
    pub ttl_minutes: u32,
    pub from: &'a str,
}

impl Template {
    /// Ten concatenated SMS segments at most, which carriers deliver reliably.
    pub const MAX_CHARS: usize = 1530;

    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        if source.trim().is_empty() {
            return Err(TemplateError::Empty);
        }
        if source.chars().count() > Self::MAX_CHARS {
            return Err(TemplateError::TooLong { max: Self::MAX_CHARS });
        }
        // Line breaks are fine in a message; other control characters are not text.
        if source.chars().any(|c| c.is_control() && c != '\n' && c != '\r') {
            return Err(TemplateError::ControlCharacter);
        }
        let parts = split(source)?;
        if !parts.contains(&Part::Pin) && !parts.contains(&Part::PinSpoken) {
            return Err(TemplateError::NoPin);
        }
        Ok(Self {
            source: source.to_string(),
            parts,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The message to send. It contains the PIN: it goes to the provider and nowhere else.
    pub fn render(&self, values: &Values<'_>) -> String {
        self.render_with(values.pin.expose(), values.ttl_minutes, values.from)
    }

    /// The message with a stand-in of the PIN's length and alphabet, for counting segments
    /// before any PIN exists.
    pub fn render_shape(&self, pin_length: u8, ttl_minutes: u32, from: &str) -> String {
        self.render_with(&"0".repeat(pin_length.into()), ttl_minutes, from)
    }

    fn render_with(&self, pin: &str, ttl_minutes: u32, from: &str) -> String {
        let mut out = String::with_capacity(self.source.len() + 16);
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Pin => out.push_str(pin),
                Part::PinSpoken => out.push_str(&spoken(pin)),
                Part::TtlMinutes => out.push_str(&ttl_minutes.to_string()),
                Part::From => out.push_str(from),
            }
        }
        out
    }
}

/// The voice templates built in, by language: each says the code twice.
pub const VOICE_DEFAULTS: [(&str, &str); 6] = [
    (
        "en",
        "Your verification code is {{pin_spoken}}. Again, your code is {{pin_spoken}}.",
    ),
    (
        "fr",
        "Votre code de vérification est {{pin_spoken}}. Je répète : {{pin_spoken}}.",
    ),
    (
        "es",
        "Su código de verificación es {{pin_spoken}}. Repito: {{pin_spoken}}.",
    ),
    (
        "de",
        "Ihr Bestätigungscode lautet {{pin_spoken}}. Ich wiederhole: {{pin_spoken}}.",
    ),
    (
        "pt",
        "O seu código de verificação é {{pin_spoken}}. Repito: {{pin_spoken}}.",
    ),
    (
        "it",
        "Il suo codice di verifica è {{pin_spoken}}. Ripeto: {{pin_spoken}}.",
    ),
];

/// The code as text-to-speech should read it: one character at a time, `4, 8, 1, 5`.
pub fn spoken(pin: &str) -> String {
    let characters: Vec<String> = pin.chars().map(String::from).collect();
    characters.join(", ")
}

fn split(source: &str) -> Result<Vec<Part>, TemplateError> {
    let mut parts = Vec::new();
    let mut rest = source;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            parts.push(Part::Text(rest[..open].to_string()));
        }
        let after = &rest[open + 2..];
        let close = after.find("}}").ok_or(TemplateError::Unclosed)?;
        parts.push(match after[..close].trim() {
            "pin" => Part::Pin,
            "pin_spoken" => Part::PinSpoken,
            "ttl_minutes" => Part::TtlMinutes,
            "from" => Part::From,
            other => return Err(TemplateError::UnknownPlaceholder(other.chars().take(32).collect())),
        });
        rest = &after[close + 2..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_string()));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spoken_pin_is_read_digit_by_digit() {
        let template = Template::parse("Your code is {{pin_spoken}}. Again: {{pin_spoken}}.").expect("valid");
        let pin = Pin::from_digits_for_tests("481516");
        let text = template.render(&Values {
            pin: &pin,
            ttl_minutes: 5,
            from: "",
        });
        assert_eq!(text, "Your code is 4, 8, 1, 5, 1, 6. Again: 4, 8, 1, 5, 1, 6.");
    }
    use crate::domain::OtpId;
    use crate::message::pin::{derive, PinInput, PinKey, PinLength, PinType};

    #[test]
    fn placeholders_are_filled_and_spaces_inside_braces_are_allowed() {
        let template = Template::parse("{{ pin }} is your {{from}} code, valid {{ttl_minutes}} min").expect("valid");
        let key = PinKey::parse(&"ab".repeat(32)).expect("key");
        let input = PinInput {
            app_id: "shop",
            salt: &[1; 16],
            otp: OtpId::new(),
            generation: 1,
        };
        let pin = derive(&key, &input, PinType::Numbers, PinLength::DEFAULT);
        let text = template.render(&Values {
            pin: &pin,
            ttl_minutes: 5,
            from: "Acme",
        });
        assert_eq!(text, format!("{} is your Acme code, valid 5 min", pin.expose()));
    }

    #[test]
    fn a_template_without_pin_or_with_an_unknown_placeholder_is_refused() {
        assert_eq!(Template::parse("Your code"), Err(TemplateError::NoPin));
        assert_eq!(
            Template::parse("{{pin}} {{name}}"),
            Err(TemplateError::UnknownPlaceholder("name".into()))
        );
        assert_eq!(Template::parse("{{pin}} {{pin"), Err(TemplateError::Unclosed));
        assert_eq!(Template::parse("  "), Err(TemplateError::Empty));
        assert_eq!(Template::parse("{{pin}}\u{0}"), Err(TemplateError::ControlCharacter));
        assert!(Template::parse("Code:\n{{pin}}").is_ok(), "line breaks are allowed");
        assert!(matches!(
            Template::parse(&format!("{{{{pin}}}}{}", "x".repeat(1530))),
            Err(TemplateError::TooLong { .. })
        ));
    }

    #[test]
    fn the_shape_has_the_pins_length() {
        let template = Template::parse("Code: {{pin}}").expect("valid");
        assert_eq!(template.render_shape(8, 5, ""), "Code: 00000000");
    }
}

/// Property tests: any text parses to a template or a reason, and a template's message
/// holds its PIN exactly where `{{pin}}` stood, within a bounded length.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    /// Text built from the pieces templates are made of, well-formed or not.
    fn template_like() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            "[^{}]{0,30}",
            Just("{{pin}}".to_string()),
            Just("{{ pin }}".to_string()),
            Just("{{ttl_minutes}}".to_string()),
            Just("{{from}}".to_string()),
            Just("{{".to_string()),
            Just("}}".to_string()),
            Just("{".to_string()),
            "\\{\\{[a-z_ ]{0,12}\\}\\}",
            "[\\x00-\\x1f]",
        ];
        vec(piece, 0..24).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #[test]
        fn any_text_is_a_template_or_a_reason(source in ".{0,1600}") {
            if let Err(error) = Template::parse(&source) {
                prop_assert!(!error.to_string().is_empty());
            }
        }

        #[test]
        fn a_message_holds_the_pin_once_per_placeholder(
            source in template_like(),
            pin in "[0-9A-Z]{4,10}",
            ttl_minutes in 1u32..=30,
            from in "[A-Za-z0-9]{0,11}",
        ) {
            let Ok(template) = Template::parse(&source) else { return Ok(()) };
            let marked = format!("\u{1F511}{pin}\u{1F511}");
            let text = template.render_with(&marked, ttl_minutes, &from);
            let placeholders = template.parts.iter().filter(|p| **p == Part::Pin).count();
            prop_assert!(placeholders >= 1);
            prop_assert_eq!(text.matches(&marked).count(), placeholders);
            // Each placeholder is at least 7 bytes and becomes at most 11 (plus the marks).
            prop_assert!(text.len() <= 2 * source.len() + placeholders * 8);
            let shape = template.render_shape(pin.len() as u8, ttl_minutes, &from);
            prop_assert_eq!(shape.chars().count(), template.render_with(&pin, ttl_minutes, &from).chars().count());
        }
    }
}
