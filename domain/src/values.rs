//! Value types, each checked when it is made, so that a command holding one is already valid.
//! A [`ValueError`] names what is wrong in words a client can show.

use std::fmt;

use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max} characters")]
    TooLong { max: usize },
    #[error("must be a UUID")]
    NotAnId,
    #[error("must be greater than zero")]
    NotPositive,
    #[error("must be at most {max}")]
    TooLarge { max: u64 },
    #[error("must be one of: credit_card, debit_card, bank_account")]
    UnknownKind,
    #[error("{0}")]
    InvalidNumber(&'static str),
}

macro_rules! id_type {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            pub fn new() -> Self {
                $name(Uuid::new_v4())
            }

            pub fn parse(text: &str) -> Result<Self, ValueError> {
                if text.trim().is_empty() {
                    return Err(ValueError::Empty);
                }
                Uuid::parse_str(text.trim()).map($name).map_err(|_| ValueError::NotAnId)
            }

            pub fn uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                $name(Uuid::nil())
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                $name(uuid)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }
    )*};
}

id_type!(
    /// A reservation; its stream is `reservation-{id}`.
    ReservationId,
    /// A payment; its stream is `payment-{id}`.
    PaymentId,
    /// A payment method; its stream is `paymethod-{id}`.
    PaymethodId,
    /// A message; its stream is `message-{id}`.
    MessageId,
    /// A customer: the key that seals their personal data is theirs alone.
    CustomerId,
);

/// An amount of money in cents. Prices are positive and below a sanity bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Money(u64);

impl Money {
    /// 1,000,000.00: no cleaning costs more.
    pub const MAX_CENTS: u64 = 100_000_000;

    pub fn from_cents(cents: i64) -> Result<Money, ValueError> {
        match u64::try_from(cents) {
            Ok(0) | Err(_) => Err(ValueError::NotPositive),
            Ok(c) if c > Self::MAX_CENTS => Err(ValueError::TooLarge {
                max: Self::MAX_CENTS,
            }),
            Ok(c) => Ok(Money(c)),
        }
    }

    /// An amount read back from an event: it was checked when the event was written.
    pub fn from_stored_cents(cents: u64) -> Money {
        Money(cents)
    }

    pub fn cents(&self) -> u64 {
        self.0
    }
}

/// Personal data: a customer's name, the place to clean, a message's recipient and text.
///
/// It prints as `<personal>` and implements no serialisation, so it cannot reach a log or an
/// event in the clear by accident; the event adapter seals it with the customer's key. Once the
/// customer is forgotten (their key destroyed) it reads back as erased.
#[derive(Clone, PartialEq, Eq)]
pub struct Personal<T>(Option<T>);

impl<T> Personal<T> {
    pub fn new(value: T) -> Self {
        Personal(Some(value))
    }

    /// Data whose key was destroyed: it is gone for good.
    pub fn erased() -> Self {
        Personal(None)
    }

    /// The value itself, for sealing or for the one who owns it; `None` once erased.
    pub fn expose(&self) -> Option<&T> {
        self.0.as_ref()
    }

    pub fn is_erased(&self) -> bool {
        self.0.is_none()
    }
}

impl<T> Default for Personal<T> {
    fn default() -> Self {
        Personal::erased()
    }
}

impl<T> fmt::Debug for Personal<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "<personal>"
        } else {
            "<erased>"
        })
    }
}

impl Personal<String> {
    /// Non-empty personal text of at most `max` characters, trimmed.
    pub fn text(value: &str, max: usize) -> Result<Self, ValueError> {
        text(value, max).map(Personal::new)
    }
}

/// Non-empty text of at most `max` characters, trimmed.
pub fn text(value: &str, max: usize) -> Result<String, ValueError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(ValueError::Empty);
    }
    if value.chars().count() > max {
        return Err(ValueError::TooLong { max });
    }
    Ok(value.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymethodKind {
    CreditCard,
    DebitCard,
    BankAccount,
}

impl PaymethodKind {
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        match text.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "credit_card" => Ok(PaymethodKind::CreditCard),
            "debit_card" => Ok(PaymethodKind::DebitCard),
            "bank_account" => Ok(PaymethodKind::BankAccount),
            _ => Err(ValueError::UnknownKind),
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            PaymethodKind::CreditCard => "credit_card",
            PaymethodKind::DebitCard => "debit_card",
            PaymethodKind::BankAccount => "bank_account",
        }
    }
}

/// A card or account number with all but its last four characters hidden. The full number is
/// checked, masked, and dropped here: it never reaches an event, a log or a read model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskedNumber(String);

impl MaskedNumber {
    /// Checks `number` for `kind` (cards: 12 to 19 digits passing the Luhn check; accounts: an
    /// IBAN-like 8 to 34 letters and digits) and masks it.
    pub fn mask(kind: PaymethodKind, number: &str) -> Result<MaskedNumber, ValueError> {
        let compact: String = number
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .collect();
        if compact.is_empty() {
            return Err(ValueError::Empty);
        }
        match kind {
            PaymethodKind::CreditCard | PaymethodKind::DebitCard => {
                if !compact.chars().all(|c| c.is_ascii_digit()) {
                    return Err(ValueError::InvalidNumber("a card number has digits only"));
                }
                if !(12..=19).contains(&compact.len()) {
                    return Err(ValueError::InvalidNumber(
                        "a card number has 12 to 19 digits",
                    ));
                }
                if !luhn(&compact) {
                    return Err(ValueError::InvalidNumber(
                        "the card number's check digit is wrong",
                    ));
                }
            }
            PaymethodKind::BankAccount => {
                if !compact.chars().all(|c| c.is_ascii_alphanumeric()) {
                    return Err(ValueError::InvalidNumber(
                        "an account number has letters and digits only",
                    ));
                }
                if !(8..=34).contains(&compact.len()) {
                    return Err(ValueError::InvalidNumber(
                        "an account number has 8 to 34 characters",
                    ));
                }
            }
        }
        let tail: String = compact.chars().skip(compact.len() - 4).collect();
        Ok(MaskedNumber(format!("****{}", tail.to_ascii_uppercase())))
    }

    /// A masked number as stored in an event (already masked).
    pub fn from_masked(masked: String) -> MaskedNumber {
        MaskedNumber(masked)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn luhn(digits: &str) -> bool {
    let sum: u32 = digits
        .chars()
        .rev()
        .filter_map(|c| c.to_digit(10))
        .enumerate()
        .map(|(i, d)| match (i % 2, d * 2) {
            (1, doubled) if doubled > 9 => doubled - 9,
            (1, doubled) => doubled,
            _ => d,
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_positive_and_bounded() {
        assert_eq!(Money::from_cents(12_500).unwrap().cents(), 12_500);
        assert_eq!(Money::from_cents(0), Err(ValueError::NotPositive));
        assert_eq!(Money::from_cents(-5), Err(ValueError::NotPositive));
        assert!(matches!(
            Money::from_cents(100_000_001),
            Err(ValueError::TooLarge { .. })
        ));
    }

    #[test]
    fn card_numbers_are_checked_and_masked() {
        let masked = MaskedNumber::mask(PaymethodKind::CreditCard, "4111 1111 1111 1111").unwrap();
        assert_eq!(masked.as_str(), "****1111");
        assert!(MaskedNumber::mask(PaymethodKind::CreditCard, "4111 1111 1111 1112").is_err());
        assert!(MaskedNumber::mask(PaymethodKind::DebitCard, "4111-abcd").is_err());
        assert!(MaskedNumber::mask(PaymethodKind::DebitCard, "").is_err());
        let iban =
            MaskedNumber::mask(PaymethodKind::BankAccount, "DE89 3704 0044 0532 0130 00").unwrap();
        assert_eq!(iban.as_str(), "****3000");
    }

    #[test]
    fn personal_data_never_prints() {
        let name = Personal::text("  Ada Lovelace ", 100).unwrap();
        assert_eq!(format!("{name:?}"), "<personal>");
        assert_eq!(name.expose().map(String::as_str), Some("Ada Lovelace"));
        assert_eq!(format!("{:?}", Personal::<String>::erased()), "<erased>");
        assert_eq!(Personal::text("   ", 10), Err(ValueError::Empty));
        assert_eq!(
            Personal::text("abcdef", 5),
            Err(ValueError::TooLong { max: 5 })
        );
    }

    #[test]
    fn ids_parse_or_say_why_not() {
        let id = ReservationId::new();
        assert_eq!(ReservationId::parse(&id.to_string()), Ok(id));
        assert_eq!(ReservationId::parse(""), Err(ValueError::Empty));
        assert_eq!(ReservationId::parse("nope"), Err(ValueError::NotAnId));
    }
}
