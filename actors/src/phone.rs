//! Phone numbers and WhatsApp addresses (JIDs).

/// Normalises a phone number written by a person ("+7 (900) 123-45-67") to the digits
/// WhatsApp uses ("79001234567").
///
/// Fails when anything but digits and the usual separators (space, `+`, `-`, `.`,
/// parentheses) appears, or when the result is not 7 to 15 digits (E.164's maximum).
pub fn normalize_phone(input: &str) -> Result<String, String> {
    let trimmed = input.trim();
    let mut digits = String::with_capacity(trimmed.len());
    for (i, c) in trimmed.chars().enumerate() {
        match c {
            '0'..='9' => digits.push(c),
            '+' if i == 0 => {}
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => {
                return Err(format!(
                    "phone '{input}' contains '{c}': use digits with an optional leading +"
                ));
            }
        }
    }
    if !(7..=15).contains(&digits.len()) {
        return Err(format!("phone '{input}' must have 7 to 15 digits"));
    }
    Ok(digits)
}

#[cfg(test)]
mod tests {
    use super::normalize_phone;

    #[test]
    fn normalises_human_formats() {
        assert_eq!(
            normalize_phone("+7 (900) 123-45-67").as_deref(),
            Ok("79001234567")
        );
        assert_eq!(normalize_phone("79001234567").as_deref(), Ok("79001234567"));
        assert_eq!(
            normalize_phone(" 1.555.123.4567 ").as_deref(),
            Ok("15551234567")
        );
    }

    #[test]
    fn refuses_garbage() {
        for bad in [
            "",
            "12345",
            "1234567890123456",
            "7900abc4567",
            "79001234567@s.whatsapp.net",
            "7+9001234567",
        ] {
            assert!(normalize_phone(bad).is_err(), "{bad}");
        }
    }

    mod properties {
        use proptest::prelude::*;

        use super::normalize_phone;

        /// A valid number (7 to 15 digits) written the ways people write numbers: an
        /// optional leading `+`, separators between digits, spaces around.
        fn written() -> impl Strategy<Value = (String, String)> {
            "[0-9]{7,15}".prop_flat_map(|digits| {
                let n = digits.len();
                (
                    Just(digits),
                    any::<bool>(),
                    proptest::collection::vec(
                        proptest::sample::select(vec!["", "", " ", "-", ".", "(", ")", " - "]),
                        n,
                    ),
                    "[ \t]{0,2}",
                    "[ \t\n]{0,2}",
                )
                    .prop_map(|(digits, plus, seps, lead, trail)| {
                        let mut text = lead;
                        if plus {
                            text.push('+');
                        }
                        for (d, sep) in digits.chars().zip(seps) {
                            text.push(d);
                            text.push_str(sep);
                        }
                        text.push_str(&trail);
                        (digits, text)
                    })
            })
        }

        /// Anything: arbitrary text, text made of the accepted characters, written numbers.
        fn anything() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<String>(),
                "[0-9+ ().-]{0,25}",
                written().prop_map(|(_, text)| text),
            ]
        }

        proptest! {
            #[test]
            fn never_panics_and_yields_7_to_15_digits(input in anything()) {
                if let Ok(digits) = normalize_phone(&input) {
                    prop_assert!((7..=15).contains(&digits.len()), "{digits}");
                    prop_assert!(digits.bytes().all(|b| b.is_ascii_digit()), "{digits}");
                }
            }

            #[test]
            fn is_idempotent(input in anything()) {
                if let Ok(digits) = normalize_phone(&input) {
                    prop_assert_eq!(normalize_phone(&digits), Ok(digits.clone()));
                }
            }

            #[test]
            fn written_numbers_round_trip((digits, text) in written()) {
                prop_assert_eq!(normalize_phone(&text), Ok(digits));
            }

            #[test]
            fn any_other_character_is_refused(
                (_, text) in written(),
                at in any::<prop::sample::Index>(),
                bad in any::<char>().prop_filter("not allowed", |c| {
                    !c.is_ascii_digit() && !" +-.()".contains(*c) && !c.is_whitespace()
                }),
            ) {
                let mut chars: Vec<char> = text.chars().collect();
                chars.insert(at.index(chars.len() + 1), bad);
                let text: String = chars.into_iter().collect();
                prop_assert!(normalize_phone(&text).is_err(), "{text:?}");
            }

            #[test]
            fn too_few_or_too_many_digits_are_refused(digits in "[0-9]{0,6}|[0-9]{16,40}") {
                prop_assert!(normalize_phone(&digits).is_err());
            }
        }
    }
}
