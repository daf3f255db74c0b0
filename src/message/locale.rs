//! Which template a job is sent with (DESIGN, "Locale choice"): the explicit `language`,
//! then the best `template_<lang>` for it (pt-BR finds pt), then the language of the phone
//! number's country (+33 finds fr), then the job's `template`, then the app's templates.

use std::collections::BTreeMap;
use std::fmt;

/// A BCP-47 language tag, normalised: `pt-BR`, `zh-Hant-TW`, `fr`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Locale(String);

impl Locale {
    /// Language (2-3 letters), then subtags of 2-8 letters or digits; `_` is read as `-`.
    pub fn parse(input: &str) -> Result<Self, &'static str> {
        const ERR: &str = "language must be a BCP-47 tag such as \"fr\" or \"pt-BR\"";
        if input.len() > 35 {
            return Err(ERR);
        }
        let mut subtags = input.split(['-', '_']);
        let language = subtags.next().unwrap_or_default();
        if !(2..=3).contains(&language.len()) || !language.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(ERR);
        }
        let mut tag = language.to_ascii_lowercase();
        for subtag in subtags {
            if !(2..=8).contains(&subtag.len()) || !subtag.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(ERR);
            }
            tag.push('-');
            tag.push_str(&match subtag.len() {
                2 => subtag.to_ascii_uppercase(),
                4 => title_case(subtag),
                _ => subtag.to_ascii_lowercase(),
            });
        }
        Ok(Self(tag))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The primary language subtag (`pt` of `pt-BR`).
    pub fn language(&self) -> &str {
        self.0.split('-').next().unwrap_or(&self.0)
    }
}

fn title_case(s: &str) -> String {
    let lower = s.to_ascii_lowercase();
    lower[..1].to_ascii_uppercase() + &lower[1..]
}

impl fmt::Display for Locale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The entry of `available` that best serves `wanted`: the exact tag, then the bare
/// language (pt-BR → pt), then any regional variant of the language (pt → pt-PT).
pub fn best_match<'a, T>(wanted: &Locale, available: &'a BTreeMap<Locale, T>) -> Option<(&'a Locale, &'a T)> {
    if let Some(found) = available.get_key_value(wanted) {
        return Some(found);
    }
    let language = wanted.language();
    available
        .iter()
        .find(|(tag, _)| tag.as_str() == language)
        .or_else(|| available.iter().find(|(tag, _)| tag.language() == language))
}

/// The main language of a country, by ISO 3166-1 region code.
pub fn language_of_region(region: &str) -> Option<Locale> {
    let language = REGION_LANGUAGE
        .iter()
        .find(|(r, _)| *r == region)
        .map(|(_, language)| *language)?;
    Locale::parse(language).ok()
}

/// Where a country has several languages this names the one most messages are written in;
/// apps that know better send `language`.
const REGION_LANGUAGE: &[(&str, &str)] = &[
    ("AD", "ca"),
    ("AE", "ar"),
    ("AF", "fa"),
    ("AL", "sq"),
    ("AM", "hy"),
    ("AO", "pt"),
    ("AR", "es"),
    ("AT", "de"),
    ("AU", "en"),
    ("AZ", "az"),
    ("BA", "bs"),
    ("BD", "bn"),
    ("BE", "nl"),
    ("BF", "fr"),
    ("BG", "bg"),
    ("BH", "ar"),
    ("BI", "fr"),
    ("BJ", "fr"),
    ("BO", "es"),
    ("BR", "pt-BR"),
    ("BY", "be"),
    ("CA", "en"),
    ("CD", "fr"),
    ("CF", "fr"),
    ("CG", "fr"),
    ("CH", "de"),
    ("CI", "fr"),
    ("CL", "es"),
    ("CM", "fr"),
    ("CN", "zh"),
    ("CO", "es"),
    ("CR", "es"),
    ("CU", "es"),
    ("CV", "pt"),
    ("CY", "el"),
    ("CZ", "cs"),
    ("DE", "de"),
    ("DK", "da"),
    ("DO", "es"),
    ("DZ", "ar"),
    ("EC", "es"),
    ("EE", "et"),
    ("EG", "ar"),
    ("ES", "es"),
    ("ET", "am"),
    ("FI", "fi"),
    ("FR", "fr"),
    ("GA", "fr"),
    ("GB", "en"),
    ("GE", "ka"),
    ("GF", "fr"),
    ("GN", "fr"),
    ("GP", "fr"),
    ("GQ", "es"),
    ("GR", "el"),
    ("GT", "es"),
    ("GW", "pt"),
    ("HK", "zh-HK"),
    ("HN", "es"),
    ("HR", "hr"),
    ("HT", "fr"),
    ("HU", "hu"),
    ("ID", "id"),
    ("IE", "en"),
    ("IL", "he"),
    ("IN", "hi"),
    ("IQ", "ar"),
    ("IR", "fa"),
    ("IS", "is"),
    ("IT", "it"),
    ("JO", "ar"),
    ("JP", "ja"),
    ("KE", "sw"),
    ("KG", "ky"),
    ("KH", "km"),
    ("KR", "ko"),
    ("KW", "ar"),
    ("KZ", "kk"),
    ("LA", "lo"),
    ("LB", "ar"),
    ("LI", "de"),
    ("LK", "si"),
    ("LT", "lt"),
    ("LU", "fr"),
    ("LV", "lv"),
    ("LY", "ar"),
    ("MA", "ar"),
    ("MC", "fr"),
    ("MD", "ro"),
    ("ME", "sr"),
    ("MG", "fr"),
    ("MK", "mk"),
    ("ML", "fr"),
    ("MM", "my"),
    ("MN", "mn"),
    ("MO", "zh-MO"),
    ("MQ", "fr"),
    ("MR", "ar"),
    ("MT", "mt"),
    ("MX", "es"),
    ("MY", "ms"),
    ("MZ", "pt"),
    ("NC", "fr"),
    ("NE", "fr"),
    ("NG", "en"),
    ("NI", "es"),
    ("NL", "nl"),
    ("NO", "nb"),
    ("NP", "ne"),
    ("NZ", "en"),
    ("OM", "ar"),
    ("PA", "es"),
    ("PE", "es"),
    ("PF", "fr"),
    ("PH", "fil"),
    ("PK", "ur"),
    ("PL", "pl"),
    ("PR", "es"),
    ("PS", "ar"),
    ("PT", "pt-PT"),
    ("PY", "es"),
    ("QA", "ar"),
    ("RE", "fr"),
    ("RO", "ro"),
    ("RS", "sr"),
    ("RU", "ru"),
    ("RW", "rw"),
    ("SA", "ar"),
    ("SD", "ar"),
    ("SE", "sv"),
    ("SG", "en"),
    ("SI", "sl"),
    ("SK", "sk"),
    ("SN", "fr"),
    ("SO", "so"),
    ("SV", "es"),
    ("SY", "ar"),
    ("TD", "fr"),
    ("TG", "fr"),
    ("TH", "th"),
    ("TJ", "tg"),
    ("TM", "tk"),
    ("TN", "ar"),
    ("TR", "tr"),
    ("TW", "zh-TW"),
    ("TZ", "sw"),
    ("UA", "uk"),
    ("UG", "en"),
    ("US", "en"),
    ("UY", "es"),
    ("UZ", "uz"),
    ("VE", "es"),
    ("VN", "vi"),
    ("YE", "ar"),
    ("YT", "fr"),
    ("ZA", "en"),
    ("ZM", "en"),
    ("ZW", "en"),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(list: &[&str]) -> BTreeMap<Locale, ()> {
        list.iter().map(|t| (Locale::parse(t).expect("tag"), ())).collect()
    }

    #[test]
    fn tags_are_normalised() {
        assert_eq!(Locale::parse("PT_br").expect("tag").as_str(), "pt-BR");
        assert_eq!(Locale::parse("zh-hant-tw").expect("tag").as_str(), "zh-Hant-TW");
        for bad in ["", "f", "french-language", "fr-", "1a", "fr-a"] {
            assert!(Locale::parse(bad).is_err(), "{bad}");
        }
    }

    fn found(wanted: &str, available: &[&str]) -> Option<String> {
        let available = tags(available);
        best_match(&Locale::parse(wanted).expect("tag"), &available).map(|(tag, _)| tag.to_string())
    }

    #[test]
    fn a_regional_request_falls_back_to_the_bare_language_then_any_variant() {
        assert_eq!(found("pt-BR", &["en", "pt", "pt-PT"]).as_deref(), Some("pt"));
        assert_eq!(found("pt-BR", &["pt-PT", "pt-BR"]).as_deref(), Some("pt-BR"));
        assert_eq!(found("pt", &["pt-PT"]).as_deref(), Some("pt-PT"));
        assert_eq!(found("pt-BR", &["en", "es"]), None);
    }

    #[test]
    fn countries_map_to_their_language_and_the_table_is_sorted_and_valid() {
        assert_eq!(language_of_region("FR").expect("fr").as_str(), "fr");
        assert_eq!(language_of_region("BR").expect("br").as_str(), "pt-BR");
        assert!(language_of_region("XX").is_none());
        assert!(
            REGION_LANGUAGE.windows(2).all(|w| w[0].0 < w[1].0),
            "keep the table sorted"
        );
        assert!(REGION_LANGUAGE.iter().all(|(_, l)| Locale::parse(l).is_ok()));
    }
}
