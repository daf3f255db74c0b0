use std::fmt;

/// A valid phone number in E.164 form (`+33612345678`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneNumber {
    e164: String,
    region: Option<String>,
    /// The country calling code and the national number as written (leading zeros kept),
    /// kept from parsing so [`PhoneNumber::kind`] need not parse again.
    code: u16,
    national: String,
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

/// What kind of line a number is, by the numbering plan (libphonenumber's metadata): what
/// the SMS-pumping guard decides on. Premium-rate and shared-cost numbers earn their owner
/// money per message; VoIP, pager, personal and unknown ranges are where pumping hides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NumberKind {
    FixedLine,
    Mobile,
    /// The plan cannot tell fixed from mobile (the US, Canada, ...).
    FixedLineOrMobile,
    TollFree,
    PremiumRate,
    SharedCost,
    Personal,
    Voip,
    Pager,
    /// A company's "universal access" number.
    Uan,
    Voicemail,
    Unknown,
}

impl NumberKind {
    /// Every kind, in the order `classify` tries them.
    pub const ALL: [NumberKind; 12] = [
        NumberKind::PremiumRate,
        NumberKind::TollFree,
        NumberKind::SharedCost,
        NumberKind::Voip,
        NumberKind::Personal,
        NumberKind::Pager,
        NumberKind::Uan,
        NumberKind::Voicemail,
        NumberKind::FixedLine,
        NumberKind::Mobile,
        NumberKind::FixedLineOrMobile,
        NumberKind::Unknown,
    ];

    /// The kind named as [`NumberKind::as_str`] writes it.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            NumberKind::FixedLine => "fixed_line",
            NumberKind::Mobile => "mobile",
            NumberKind::FixedLineOrMobile => "fixed_line_or_mobile",
            NumberKind::TollFree => "toll_free",
            NumberKind::PremiumRate => "premium_rate",
            NumberKind::SharedCost => "shared_cost",
            NumberKind::Personal => "personal",
            NumberKind::Voip => "voip",
            NumberKind::Pager => "pager",
            NumberKind::Uan => "uan",
            NumberKind::Voicemail => "voicemail",
            NumberKind::Unknown => "unknown",
        }
    }

    /// libphonenumber's order: the costly and unusual kinds first, then fixed or mobile.
    fn classify(meta: &'static phonenumber::Metadata, national: &str) -> Self {
        use phonenumber::Type;
        let descriptors = meta.descriptors();
        if !plan::matches(descriptors.general(), national) {
            return NumberKind::Unknown;
        }
        let matches = |kind: Type| descriptors.get(kind).is_some_and(|d| plan::matches(d, national));
        let special = [
            (Type::PremiumRate, NumberKind::PremiumRate),
            (Type::TollFree, NumberKind::TollFree),
            (Type::SharedCost, NumberKind::SharedCost),
            (Type::Voip, NumberKind::Voip),
            (Type::PersonalNumber, NumberKind::Personal),
            (Type::Pager, NumberKind::Pager),
            (Type::Uan, NumberKind::Uan),
            (Type::Voicemail, NumberKind::Voicemail),
        ];
        if let Some((_, kind)) = special.iter().find(|(kind, _)| matches(*kind)) {
            return *kind;
        }
        match (matches(Type::FixedLine), matches(Type::Mobile)) {
            (true, true) => NumberKind::FixedLineOrMobile,
            (true, false) => NumberKind::FixedLine,
            (false, true) => NumberKind::Mobile,
            (false, false) => NumberKind::Unknown,
        }
    }
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
        let parsed = phonenumber::parse(plan::region_hint(input), input).map_err(|_| PhoneError::Invalid)?;
        // The crate's `is_valid` and `country().id()`, with the patterns compiled once (`plan`).
        // Which plan a number is read against depends on how the national number is written:
        // validity reads it with its leading zeros, the region without (as the crate does).
        let database = &*phonenumber::metadata::DATABASE;
        let code = parsed.code().value();
        let national = parsed.national().to_string();
        let meta = plan::source(database, code, &national);
        let valid = meta.is_some_and(|meta| NumberKind::classify(meta, &national) != NumberKind::Unknown);
        if !valid {
            return Err(PhoneError::Invalid);
        }
        let region_meta = match parsed.national().zeros() {
            0 => meta,
            _ => plan::source(database, code, &parsed.national().value().to_string()),
        };
        Ok(Self {
            e164: format!("+{code}{national}"),
            region: region_meta
                .and_then(|meta| meta.id().parse::<phonenumber::country::Id>().ok())
                .map(|id| id.as_ref().to_string()),
            code,
            national,
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

    /// The kind of line, from the numbering plan. Worked out on demand (it matches the
    /// number against each kind's pattern), so only the callers that decide on it pay.
    pub fn kind(&self) -> NumberKind {
        let database = &*phonenumber::metadata::DATABASE;
        // The national number as written, its leading zeros kept (Italy's 02…): the crate's
        // own `number_type` reads it as an integer and loses them. A country code shared by
        // several regions (+39: Italy and the Vatican) is read against each of them, the
        // number's own region first (found, as the crate finds it, without the zeros).
        let unpadded = self.national.trim_start_matches('0');
        plan::source(database, self.code, unpadded)
            .into_iter()
            .chain(database.by_code(&self.code).unwrap_or_default())
            .map(|meta| NumberKind::classify(meta, &self.national))
            .find(|kind| *kind != NumberKind::Unknown)
            .unwrap_or(NumberKind::Unknown)
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

/// The numbering plan's patterns, each compiled once for the life of the process.
///
/// The `phonenumber` crate keeps its compiled patterns in one LRU of 100 behind a
/// process-wide lock and hashes a pattern's whole text (SipHash) on every match; a
/// number of a country code shared by many regions (+1) is matched against dozens of them.
/// That was 15% of the worker's CPU (docs/BENCHMARKS.md, "Where the time goes"), and traffic
/// to more countries than the LRU holds would compile patterns again and again. Here each
/// pattern is compiled on first use, anchored, and found again by its address in the
/// crate's static metadata.
mod plan {
    use std::collections::HashMap;
    use std::sync::{Arc, LazyLock, PoisonError, RwLock};

    use phonenumber::metadata::{Database, Descriptor, Metadata};
    use regex::Regex;
    use regex_cache::CachedRegex;

    static COMPILED: LazyLock<RwLock<HashMap<usize, Arc<Regex>>>> = LazyLock::new(Default::default);

    /// Whether `pattern` matches `text` from its first character (the crate's `find` with
    /// `start() == 0`).
    pub(super) fn starts(pattern: &'static CachedRegex, text: &str) -> bool {
        // The metadata is a static that lives as long as the process: its address names it.
        let key = pattern as *const CachedRegex as usize;
        let found = COMPILED
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .cloned();
        let regex = match found {
            Some(regex) => regex,
            None => {
                // As the crate builds it (`ignore_whitespace`), anchored at the start, and
                // without Unicode classes: a national number is ASCII digits, and `\d` as
                // every Unicode digit made each compiled pattern four times the size (every
                // pattern of the metadata, 1,386, took 155 MB with them, 37 MB without).
                let built = regex::RegexBuilder::new(&format!("^(?:{})", pattern.as_str()))
                    .ignore_whitespace(true)
                    .unicode(false)
                    .build();
                let Ok(regex) = built else {
                    return pattern.find(text).is_some_and(|m| m.start() == 0);
                };
                let regex = Arc::new(regex);
                COMPILED
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(key, regex.clone());
                regex
            }
        };
        regex.is_match(text)
    }

    /// The crate's `Descriptor::is_match`: a possible length, then the pattern.
    pub(super) fn matches(descriptor: &'static Descriptor, national: &str) -> bool {
        let lengths = descriptor.possible_length();
        if !lengths.is_empty() && !lengths.contains(&(national.len() as u16)) {
            return false;
        }
        starts(descriptor.national_number(), national)
    }

    /// The region the crate would read an E.164 `input` against, found here with the patterns
    /// compiled once, for a code that several regions share (+1: 25 of them). Given no
    /// region, the crate finds it itself by matching the number against each region's
    /// patterns through its LRU: most of a +1 number's parse. Given this one it reads the
    /// number against the same plan. (The regions sharing a code read their E.164 numbers
    /// alike, so `validity_region_and_form_are_the_phonenumber_crate_s` would pass with a
    /// cruder choice too; this is the crate's own.) `None` where a code has one region,
    /// which the crate finds without a match, or none.
    pub(super) fn region_hint(input: &str) -> Option<phonenumber::country::Id> {
        let database = &*phonenumber::metadata::DATABASE;
        let digits: String = input.chars().filter(char::is_ascii_digit).collect();
        // The crate's rule: the shortest prefix, of up to three digits, that is a calling code.
        let (code, national) = (1..=3.min(digits.len())).find_map(|len| {
            let code: u16 = digits[..len].parse().ok()?;
            database.by_code(&code).map(|_| (code, &digits[len..]))
        })?;
        if database.region(&code)?.len() < 2 {
            return None;
        }
        source(database, code, national.trim_start_matches('0'))?
            .id()
            .parse()
            .ok()
    }

    /// The plan a number is read against: the crate's `validator::source_for` and the
    /// lookup that follows it. Of the regions sharing a code, the first whose leading
    /// digits match, or (without leading digits) whose plan knows the number.
    pub(super) fn source(database: &'static Database, code: u16, national: &str) -> Option<&'static Metadata> {
        let regions = database.region(&code)?;
        if let [region] = regions.as_slice() {
            return match *region {
                "001" => database.by_code(&code).and_then(|m| m.into_iter().next()),
                region => database.by_id(region),
            };
        }
        regions.into_iter().find_map(|region| {
            let meta = database.by_id(region)?;
            let known = match meta.leading_digits() {
                Some(pattern) => starts(pattern, national),
                None => super::NumberKind::classify(meta, national) != super::NumberKind::Unknown,
            };
            known.then_some(meta)
        })
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

    /// Every example number the metadata gives for a kind of line, in every region, is
    /// classified as that kind (or, for fixed and mobile, as "either" where the plan cannot
    /// tell them apart). Examples our E.164 shape refuses (under 8 digits) are counted out.
    #[test]
    fn each_kind_of_line_in_the_metadata_s_examples_is_classified_as_that_kind() {
        use phonenumber::metadata::DATABASE;
        use phonenumber::Type;
        let kinds = [
            (Type::FixedLine, NumberKind::FixedLine),
            (Type::Mobile, NumberKind::Mobile),
            (Type::TollFree, NumberKind::TollFree),
            (Type::PremiumRate, NumberKind::PremiumRate),
            (Type::SharedCost, NumberKind::SharedCost),
            (Type::PersonalNumber, NumberKind::Personal),
            (Type::Voip, NumberKind::Voip),
            (Type::Pager, NumberKind::Pager),
            (Type::Uan, NumberKind::Uan),
            (Type::Voicemail, NumberKind::Voicemail),
        ];
        let mut checked = std::collections::HashMap::new();
        let mut wrong = Vec::new();
        for meta in DATABASE.iter() {
            for (kind, expected) in kinds {
                let Some(example) = meta.descriptors().get(kind).and_then(|d| d.example()) else {
                    continue;
                };
                let Ok(phone) = PhoneNumber::parse(&format!("+{}{example}", meta.country_code())) else {
                    continue;
                };
                let got = phone.kind();
                let either = got == NumberKind::FixedLineOrMobile
                    && matches!(expected, NumberKind::FixedLine | NumberKind::Mobile);
                if got != expected && !either {
                    wrong.push(format!("{} {example}: {expected:?} read as {got:?}", meta.id()));
                }
                *checked.entry(expected).or_insert(0) += 1;
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
        for (_, kind) in kinds {
            assert!(checked.get(&kind).copied().unwrap_or(0) >= 5, "{kind:?}: {checked:?}");
        }
        assert!(checked[&NumberKind::PremiumRate] >= 100, "{checked:?}");
    }

    /// The crate itself is the oracle: for every example number of the metadata and three
    /// near misses of each (last digit changed, one digit short, one digit more), parsing
    /// accepts exactly what the crate's `is_valid` accepts, with the crate's E.164 form
    /// and region.
    #[test]
    fn validity_region_and_form_are_the_phonenumber_crate_s() {
        use phonenumber::metadata::DATABASE;
        use phonenumber::Type;
        let kinds = [
            Type::FixedLine,
            Type::Mobile,
            Type::TollFree,
            Type::PremiumRate,
            Type::SharedCost,
            Type::PersonalNumber,
            Type::Voip,
            Type::Pager,
            Type::Uan,
            Type::Voicemail,
        ];
        let mut compared = 0;
        let mut differ = Vec::new();
        for meta in DATABASE.iter() {
            let descriptors = meta.descriptors();
            let examples = std::iter::once(descriptors.general())
                .chain(kinds.iter().filter_map(|kind| descriptors.get(*kind)))
                .filter_map(|d| d.example());
            for example in examples {
                let mut bumped = example.to_string();
                if let Some(last) = bumped.pop() {
                    bumped.push(char::from(b'0' + (last as u8 - b'0' + 1) % 10));
                }
                let variants = [
                    example.to_string(),
                    bumped,
                    example[..example.len().saturating_sub(1)].to_string(),
                    format!("{example}0"),
                ];
                for national in variants {
                    let input = format!("+{}{national}", meta.country_code());
                    let ours = PhoneNumber::parse(&input);
                    if ours == Err(PhoneError::NotE164) {
                        continue;
                    }
                    let theirs = phonenumber::parse(None, &input).ok().filter(|p| p.is_valid()).map(|p| {
                        (
                            p.format().mode(phonenumber::Mode::E164).to_string(),
                            p.country().id().map(|id| id.as_ref().to_string()),
                        )
                    });
                    let ours = ours.ok().map(|p| (p.e164.clone(), p.region.clone()));
                    if ours != theirs {
                        differ.push(format!("{input}: ours {ours:?}, the crate's {theirs:?}"));
                    }
                    compared += 1;
                }
            }
        }
        assert!(differ.is_empty(), "{differ:#?}");
        assert!(compared > 4_000, "{compared}");
    }

    #[test]
    fn a_well_shaped_but_unassigned_number_is_refused() {
        assert_eq!(PhoneNumber::parse("+33 0 00 00 00 00"), Err(PhoneError::Invalid));
        assert_eq!(PhoneNumber::parse("+999 123456789"), Err(PhoneError::Invalid));
    }
}
