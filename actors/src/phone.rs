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
}
