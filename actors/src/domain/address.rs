//! Phone numbers and WhatsApp addresses (JIDs): parsed once, here, for every path that
//! takes one (the API, the engines, storage).

use std::fmt;

/// Suffix of WhatsApp addresses of people.
pub const USER_SERVER: &str = "s.whatsapp.net";
/// Suffix of WhatsApp addresses of groups.
pub const GROUP_SERVER: &str = "g.us";
/// Where status posts go: WhatsApp's broadcast list of the account's status.
pub const STATUS_BROADCAST: &str = "status@broadcast";
/// The legacy suffix of people's addresses, still written by many clients.
const LEGACY_USER_SERVER: &str = "c.us";
/// Longest accepted group id (digits and dashes).
const MAX_GROUP_ID: usize = 64;

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

/// A valid WhatsApp chat address: a person (`79001234567@s.whatsapp.net`) or a group
/// (`120363000000-1600000000@g.us`). Once a `Jid` exists it is valid.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Jid(String);

impl Jid {
    /// A person's address from a phone number in any common notation.
    ///
    /// Fails as [`normalize_phone`] does.
    pub fn person(phone: &str) -> Result<Jid, String> {
        Ok(Jid(format!("{}@{USER_SERVER}", normalize_phone(phone)?)))
    }

    /// A group's address from its id (digits and dashes), with or without `@g.us`.
    ///
    /// Fails when the id is empty, too long or holds anything else.
    pub fn group(id: &str) -> Result<Jid, String> {
        let id = id.trim();
        let id = id.strip_suffix(&format!("@{GROUP_SERVER}")).unwrap_or(id);
        if id.is_empty() || id.len() > MAX_GROUP_ID || !is_group_id(id) {
            return Err("a group id is digits (and dashes)".into());
        }
        Ok(Jid(format!("{id}@{GROUP_SERVER}")))
    }

    /// The account's status broadcast, where status posts go. Never parsed from what a
    /// client writes: only a status post sends there.
    pub fn status_broadcast() -> Jid {
        Jid(STATUS_BROADCAST.to_owned())
    }

    /// What a client may write for a chat: a phone number, a person's address
    /// (`…@s.whatsapp.net` or `…@c.us`) or a group's (`…@g.us`).
    ///
    /// Fails with a message saying what is accepted.
    pub fn parse(text: &str) -> Result<Jid, String> {
        let v = text.trim();
        let Some((user, server)) = v.split_once('@') else {
            return Jid::person(v);
        };
        match server {
            GROUP_SERVER if is_group_id(user) => Jid::group(user),
            USER_SERVER | LEGACY_USER_SERVER if is_group_id(user) => Jid::person(user),
            _ => Err(format!(
                "must be a phone number or a WhatsApp address like 79001234567@{USER_SERVER} \
                 or 1203630@{GROUP_SERVER}"
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// The number (or group id) part.
    pub fn user(&self) -> &str {
        jid_user(&self.0)
    }

    pub fn is_group(&self) -> bool {
        is_group_jid(&self.0)
    }
}

impl fmt::Display for Jid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Jid> for String {
    fn from(jid: Jid) -> String {
        jid.0
    }
}

fn is_group_id(id: &str) -> bool {
    !id.is_empty() && id.chars().all(|c| c.is_ascii_digit() || c == '-')
}

/// Builds the WhatsApp address of a phone number or passes a group/user JID through
/// (engines and storage, which hold addresses as plain strings).
pub fn jid_for(target: &str) -> String {
    if target.contains('@') {
        target.to_owned()
    } else {
        format!("{target}@{USER_SERVER}")
    }
}

/// The number part of a JID (`79001234567@s.whatsapp.net` → `79001234567`).
pub fn jid_user(jid: &str) -> &str {
    jid.split('@')
        .next()
        .unwrap_or(jid)
        .split(':')
        .next()
        .unwrap_or(jid)
}

/// Whether a plain-string address is a group's.
pub fn is_group_jid(jid: &str) -> bool {
    jid.strip_suffix(GROUP_SERVER)
        .is_some_and(|rest| rest.ends_with('@'))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn jids() {
        assert_eq!(jid_for("79001234567"), "79001234567@s.whatsapp.net");
        assert_eq!(jid_for("123-456@g.us"), "123-456@g.us");
        assert_eq!(jid_user("79001234567:12@s.whatsapp.net"), "79001234567");
        assert!(is_group_jid("123@g.us"));
        assert!(!is_group_jid("123@s.whatsapp.net"));
    }

    mod jid_properties {
        use proptest::prelude::*;

        use super::super::{USER_SERVER, is_group_jid, jid_for, jid_user};

        proptest! {
            #[test]
            fn jid_helpers_never_panic(input in any::<String>()) {
                let jid = jid_for(&input);
                prop_assert!(jid.contains('@'));
                let user = jid_user(&input);
                prop_assert!(input.starts_with(user), "the user part is a prefix");
                prop_assert!(!user.contains('@') && !user.contains(':'));
                let _ = is_group_jid(&input);
            }

            #[test]
            fn a_number_round_trips_through_its_jid(number in "[0-9]{1,20}") {
                let jid = jid_for(&number);
                prop_assert_eq!(&jid, &format!("{number}@{USER_SERVER}"));
                prop_assert_eq!(jid_user(&jid), number.as_str());
                prop_assert!(!is_group_jid(&jid));
                // A JID passes through unchanged; a device suffix is not the number.
                prop_assert_eq!(jid_for(&jid), jid.clone());
                let device = format!("{number}:7@{USER_SERVER}");
                prop_assert_eq!(jid_user(&device), number.as_str());
            }

            #[test]
            fn group_jids_are_groups(id in "[0-9]{5,20}(-[0-9]{5,12})?") {
                let jid = format!("{id}@g.us");
                prop_assert!(is_group_jid(&jid));
                prop_assert_eq!(jid_for(&jid), jid.clone());
                prop_assert_eq!(jid_user(&jid), id.as_str());
            }
        }
    }

    #[test]
    fn chat_addresses_parse_once() {
        assert_eq!(
            Jid::parse("+7 900 123-45-67").map(Jid::into_string),
            Ok("79001234567@s.whatsapp.net".into())
        );
        assert_eq!(
            Jid::parse("79001234567@c.us").map(Jid::into_string),
            Ok("79001234567@s.whatsapp.net".into())
        );
        assert_eq!(
            Jid::parse("120363-42@g.us").map(Jid::into_string),
            Ok("120363-42@g.us".into())
        );
        assert!(Jid::parse("120363-42@g.us").is_ok_and(|j| j.is_group()));
        for bad in [
            "",
            "abc",
            "1@g.us@x",
            "x@g.us",
            "79001234567@example.com",
            "@g.us",
            "123@",
        ] {
            assert!(Jid::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Jid::group("123-45").map(Jid::into_string),
            Ok("123-45@g.us".into())
        );
        assert!(Jid::group("12a").is_err());
    }
}
