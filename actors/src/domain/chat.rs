//! How the account keeps its chats: archived, pinned, muted and labelled (WhatsApp
//! Business labels). WhatsApp syncs these between the account's devices, so a change
//! made on the phone arrives too ([`ChatOp`] either way).

use chrono::{DateTime, TimeZone, Utc};

/// How long a chat stays muted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mute {
    Until(DateTime<Utc>),
    /// Until it is unmuted.
    Forever,
}

impl Mute {
    /// WhatsApp's encoding, which storage keeps too: `-1` for ever, else the end in
    /// Unix milliseconds.
    pub fn to_millis(self) -> i64 {
        match self {
            Mute::Forever => -1,
            Mute::Until(at) => at.timestamp_millis(),
        }
    }

    /// Reads [`Mute::to_millis`] back; `0` (or any other non-positive value but `-1`)
    /// is no mute.
    pub fn from_millis(ms: i64) -> Option<Mute> {
        match ms {
            -1 => Some(Mute::Forever),
            ms if ms > 0 => Utc.timestamp_millis_opt(ms).single().map(Mute::Until),
            _ => None,
        }
    }

    /// Whether it still holds at `now`.
    pub fn holds_at(self, now: DateTime<Utc>) -> bool {
        match self {
            Mute::Forever => true,
            Mute::Until(at) => at > now,
        }
    }
}

/// What the account keeps of one chat.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatSettings {
    pub id: String,
    pub instance_id: String,
    /// The chat's address (a person's or a group's).
    pub remote_jid: String,
    pub archived: bool,
    pub pinned: bool,
    /// None: not muted. A mute whose end has passed is kept until changed; readers ask
    /// [`Mute::holds_at`].
    pub mute: Option<Mute>,
    /// The ids of the labels on the chat, sorted.
    pub labels: Vec<String>,
    pub updated_at: DateTime<Utc>,
}

impl ChatSettings {
    /// A chat as WhatsApp starts it: nothing set.
    pub fn new(instance_id: &str, remote_jid: &str, at: DateTime<Utc>) -> Self {
        ChatSettings {
            id: super::new_id(),
            instance_id: instance_id.to_owned(),
            remote_jid: remote_jid.to_owned(),
            archived: false,
            pinned: false,
            mute: None,
            labels: Vec::new(),
            updated_at: at,
        }
    }

    /// Applies `change` made at `at`.
    pub fn apply(&mut self, change: &ChatChange, at: DateTime<Utc>) {
        match change {
            ChatChange::Archive(on) => {
                self.archived = *on;
                // WhatsApp unpins a chat it archives.
                if *on {
                    self.pinned = false;
                }
            }
            ChatChange::Pin(on) => self.pinned = *on,
            ChatChange::Mute(mute) => self.mute = *mute,
            ChatChange::Label { label_id, attached } => {
                self.labels.retain(|l| l != label_id);
                if *attached {
                    self.labels.push(label_id.clone());
                    self.labels.sort();
                }
            }
        }
        self.updated_at = at;
    }
}

/// A change of one chat.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatChange {
    Archive(bool),
    Pin(bool),
    /// None unmutes.
    Mute(Option<Mute>),
    /// Attaches (`true`) or detaches a label.
    Label {
        label_id: String,
        attached: bool,
    },
}

/// A WhatsApp Business label of the account.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    pub id: String,
    pub instance_id: String,
    /// WhatsApp's id of the label (digits on WhatsApp's own apps).
    pub label_id: String,
    pub name: String,
    /// WhatsApp's colour index, 0 to [`MAX_LABEL_COLOR`].
    pub color: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The highest colour index WhatsApp's apps offer for a label.
pub const MAX_LABEL_COLOR: i32 = 19;

/// What a label is to be: its name and colour.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelSpec {
    pub label_id: String,
    pub name: String,
    pub color: i32,
}

/// A chat or label operation, asked for by a client or made on another of the
/// account's devices.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatOp {
    Change {
        chat: String,
        change: ChatChange,
    },
    /// Creates a label, or renames and recolours it. Asked for by a client with an empty
    /// `label_id`, it is a new label: the instance picks its id ([`next_label_id`]).
    EditLabel(LabelSpec),
    DeleteLabel(String),
}

/// What a [`ChatOp`] leaves behind.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatAnswer {
    /// The chat as it is now.
    Chat(ChatSettings),
    /// The label as it is now.
    Label(Label),
    /// A label deleted.
    Done,
}

/// The id for a new label among `existing` ones: one more than the greatest numeric
/// id, as WhatsApp's apps number them.
pub fn next_label_id<'a>(existing: impl IntoIterator<Item = &'a str>) -> String {
    let top = existing
        .into_iter()
        .filter_map(|id| id.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    (top.saturating_add(1)).to_string()
}

/// Orders labels as WhatsApp lists them: numeric ids by number, then the others.
pub fn sort_labels(labels: &mut [Label]) {
    labels.sort_by(|a, b| (a.label_id.len(), &a.label_id).cmp(&(b.label_id.len(), &b.label_id)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutes_round_trip_through_whatsapps_encoding() {
        let at = Utc.timestamp_millis_opt(1_700_000_000_123).unwrap();
        for mute in [Mute::Forever, Mute::Until(at)] {
            assert_eq!(Mute::from_millis(mute.to_millis()), Some(mute));
        }
        assert_eq!(Mute::from_millis(0), None);
        assert!(Mute::Until(at).holds_at(at - chrono::Duration::seconds(1)));
        assert!(!Mute::Until(at).holds_at(at));
        assert!(Mute::Forever.holds_at(at));
    }

    #[test]
    fn changes_apply_and_archiving_unpins() {
        let now = Utc::now();
        let mut chat = ChatSettings::new("i", "79001@s.whatsapp.net", now);
        chat.apply(&ChatChange::Pin(true), now);
        assert!(chat.pinned);
        chat.apply(&ChatChange::Archive(true), now);
        assert!(chat.archived && !chat.pinned);
        for id in ["3", "1", "3"] {
            chat.apply(
                &ChatChange::Label {
                    label_id: id.into(),
                    attached: true,
                },
                now,
            );
        }
        assert_eq!(chat.labels, ["1", "3"]);
        chat.apply(
            &ChatChange::Label {
                label_id: "1".into(),
                attached: false,
            },
            now,
        );
        assert_eq!(chat.labels, ["3"]);
        chat.apply(&ChatChange::Mute(Some(Mute::Forever)), now);
        assert_eq!(chat.mute, Some(Mute::Forever));
    }

    #[test]
    fn new_label_ids_follow_the_greatest_number() {
        assert_eq!(next_label_id([]), "1");
        assert_eq!(next_label_id(["2", "10", "x", "9"]), "11");
    }
}
