//! SMS segment counting, recorded as `parts` (it is what a carrier bills).
//! GSM-7 holds 160 characters in one segment and 153 per part when concatenated;
//! anything outside GSM-7 forces UCS-2: 70, then 67 UTF-16 units per part.

const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// Characters sent as an escape plus one septet: they count twice.
const GSM7_EXTENSION: &str = "^{}\\[~]|€\u{000C}";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Gsm7,
    Ucs2,
}

/// Encoding and number of SMS segments of a message.
pub fn count(text: &str) -> (Encoding, u32) {
    let septets: Option<usize> = text
        .chars()
        .map(|c| {
            if GSM7_BASIC.contains(c) {
                Some(1)
            } else if GSM7_EXTENSION.contains(c) {
                Some(2)
            } else {
                None
            }
        })
        .sum();
    match septets {
        Some(n) => (Encoding::Gsm7, parts(n, 160, 153)),
        None => (Encoding::Ucs2, parts(text.encode_utf16().count(), 70, 67)),
    }
}

fn parts(units: usize, single: usize, multi: usize) -> u32 {
    let n = if units <= single { 1 } else { units.div_ceil(multi) };
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gsm7_fits_160_in_one_part_and_153_per_part_after() {
        assert_eq!(count(&"a".repeat(160)), (Encoding::Gsm7, 1));
        assert_eq!(count(&"a".repeat(161)), (Encoding::Gsm7, 2));
        assert_eq!(count(&"a".repeat(306)), (Encoding::Gsm7, 2));
        assert_eq!(count(&"a".repeat(307)), (Encoding::Gsm7, 3));
    }

    #[test]
    fn extension_characters_count_twice() {
        assert_eq!(count(&"€".repeat(80)), (Encoding::Gsm7, 1));
        assert_eq!(count(&"€".repeat(81)), (Encoding::Gsm7, 2));
    }

    #[test]
    fn any_other_character_switches_to_ucs2() {
        assert_eq!(count("Votre code : 123456"), (Encoding::Gsm7, 1));
        assert_eq!(count("Ваш код 123456"), (Encoding::Ucs2, 1));
        assert_eq!(count(&"ж".repeat(71)), (Encoding::Ucs2, 2));
        assert_eq!(
            count(&"😀".repeat(35)),
            (Encoding::Ucs2, 1),
            "an emoji is two UTF-16 units"
        );
        assert_eq!(count(&"😀".repeat(36)), (Encoding::Ucs2, 2));
    }
}
