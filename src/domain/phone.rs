use std::fmt;

/// A valid phone number in E.164 form (`+33612345678`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneNumber {
    e164: String,
    region: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("phone number must be in E.164 form: + then 8 to 15 digits")]
    NotE164,
    #[error("phone number is not a valid number for its country")]
    Invalid,
    #[error("country must be an ISO 3166-1 alpha-2 code with a numbering plan (FR, GB, ...)")]
    UnknownCountry,
}

impl PhoneNumber {
    /// Accepts `+` and digits, with spaces, dots, dashes and brackets as separators.
    /// The cheap shape check runs first, so the full parser only sees plausible input.
    pub fn parse(input: &str) -> Result<Self, PhoneError> {
        let input = input.trim();
        if input.len() > 32 || !input.starts_with('+') {
            return Err(PhoneError::NotE164);
        }
        let separators = |c: char| matches!(c, ' ' | '-' | '.' | '(' | ')');
        if !input[1..].chars().all(|c| c.is_ascii_digit() || separators(c)) {
            return Err(PhoneError::NotE164);
        }
        let digits = input.chars().filter(char::is_ascii_digit).count();
        if !(8..=15).contains(&digits) || input[1..].starts_with('0') {
            return Err(PhoneError::NotE164);
        }
        let parsed = phonenumber::parse(None, input).map_err(|_| PhoneError::Invalid)?;
        if !parsed.is_valid() {
            return Err(PhoneError::Invalid);
        }
        Ok(Self {
            e164: parsed.format().mode(phonenumber::Mode::E164).to_string(),
            region: parsed.country().id().map(|id| id.as_ref().to_string()),
        })
    }

    /// A number in its country's national form (`06 12 34 56 78` with `FR`), as sms.cx
    /// clients may send it with `countryIso`; the result is the number `parse` gives for
    /// its E.164 form.
    pub fn parse_national(input: &str, country: &str) -> Result<Self, PhoneError> {
        let input = input.trim();
        let separators = |c: char| matches!(c, ' ' | '-' | '.' | '(' | ')');
        if input.len() > 32 || !input.chars().all(|c| c.is_ascii_digit() || separators(c)) {
            return Err(PhoneError::Invalid);
        }
        let country: phonenumber::country::Id = country
            .trim()
            .to_ascii_uppercase()
            .parse()
            .map_err(|_| PhoneError::UnknownCountry)?;
        let parsed = phonenumber::parse(Some(country), input).map_err(|_| PhoneError::Invalid)?;
        Self::parse(&parsed.format().mode(phonenumber::Mode::E164).to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.e164
    }

    /// ISO 3166-1 region of the number (`FR`), where the numbering plan tells it.
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.e164)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_french_mobile_number_is_normalised_and_knows_its_region() {
        let phone = PhoneNumber::parse(" +33 6 12 34 56 78 ").expect("valid");
        assert_eq!(phone.as_str(), "+33612345678");
        assert_eq!(phone.region(), Some("FR"));
    }

    #[test]
    fn numbers_without_a_plus_or_with_letters_or_bad_lengths_are_refused() {
        for input in [
            "0612345678",
            "+33 6 12 AB 56 78",
            "+1234",
            "+1234567890123456",
            "+0612345678",
            "",
        ] {
            assert_eq!(PhoneNumber::parse(input), Err(PhoneError::NotE164), "{input}");
        }
    }

    #[test]
    fn a_national_number_with_its_country_becomes_the_e164_number() {
        let phone = PhoneNumber::parse_national("06 12 34 56 78", "fr").expect("valid");
        assert_eq!(phone, PhoneNumber::parse("+33612345678").expect("valid"));
        assert_eq!(
            PhoneNumber::parse_national("0612345678", "XX"),
            Err(PhoneError::UnknownCountry)
        );
        assert_eq!(PhoneNumber::parse_national("06 12", "FR"), Err(PhoneError::NotE164));
        assert_eq!(
            PhoneNumber::parse_national("+33612345678", "FR"),
            Err(PhoneError::Invalid)
        );
    }

    #[test]
    fn a_well_shaped_but_unassigned_number_is_refused() {
        assert_eq!(PhoneNumber::parse("+33 0 00 00 00 00"), Err(PhoneError::Invalid));
        assert_eq!(PhoneNumber::parse("+999 123456789"), Err(PhoneError::Invalid));
    }
}
