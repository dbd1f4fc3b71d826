//! The stored event types, declared once. Everything that names an event type (the decoder's
//! dispatch, the subscription filters, the policies' lists, the list of every type) derives
//! from this declaration, so a misspelt name or a forgotten case is a compile error.

/// Declares [`EventType`]: one variant per stored type, named as the log names it.
macro_rules! event_types {
    ($($(#[$doc:meta])* $name:ident $(@ v $version:literal)?),+ $(,)?) => {
        /// The type of a stored event; its name in the log is the variant's name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum EventType {
            $($(#[$doc])* $name),+
        }

        impl EventType {
            /// Every event type this system writes.
            pub const ALL: &'static [EventType] = &[$(EventType::$name),+];

            /// The type's name in the log.
            pub const fn name(self) -> &'static str {
                match self {
                    $(EventType::$name => stringify!($name)),+
                }
            }

            /// The payload version written today: 1 unless the declaration says `@ v2`...
            /// Older versions are upcast when read ([`crate::decode`]).
            pub const fn version(self) -> u32 {
                match self {
                    $(EventType::$name => event_types!(@version $($version)?)),+
                }
            }

            /// The type a stored name stands for; `None` for a name this system never wrote.
            pub fn from_name(name: &str) -> Option<EventType> {
                match name {
                    $(stringify!($name) => Some(EventType::$name),)+
                    _ => None,
                }
            }
        }

        /// The name of every event type this system writes.
        pub const EVENT_TYPES: &[&str] = &[$(stringify!($name)),+];
    };
    (@version) => { 1 };
    (@version $version:literal) => { $version };
}

event_types! {
    /// A reservation, paid: the customer's name and place are personal (sealed). Version 2:
    /// the price names its currency (`price: {cents, currency}` instead of `price_cents`).
    CleaningRequested @ v 2,
    CleaningStarted,
    CleaningCompleted,
    ReservationCancelled,
    PaymentApproved,
    PaymentDeclined,
    PaymentCancelled,
    /// The customer's name is personal (sealed).
    PaymethodRegistered,
    PaymethodChanged,
    /// The recipient and the text are personal (sealed).
    MessageSent,
    CustomerForgotten,
}

impl EventType {
    /// Whether events of this type hold personal data sealed with their customer's key.
    pub const fn is_sealed(self) -> bool {
        matches!(
            self,
            EventType::CleaningRequested | EventType::PaymethodRegistered | EventType::MessageSent
        )
    }

    /// A server-side filter on these types, as the event store's clients spell one.
    pub fn filter_regex(types: &[EventType]) -> String {
        let names: Vec<&str> = types.iter().map(|t| t.name()).collect();
        format!("^({})$", names.join("|"))
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_go_both_ways() {
        for &t in EventType::ALL {
            assert_eq!(EventType::from_name(t.name()), Some(t));
        }
        assert_eq!(EventType::from_name("NoSuchEvent"), None);
        assert_eq!(EVENT_TYPES.len(), EventType::ALL.len());
        assert_eq!(EventType::CleaningRequested.version(), 2);
        assert_eq!(EventType::CleaningStarted.version(), 1);
        assert_eq!(
            EventType::filter_regex(&[EventType::PaymentApproved, EventType::CleaningRequested]),
            "^(PaymentApproved|CleaningRequested)$"
        );
    }
}
