//! Who may do what: one table, read across a row per action and down a column per role.
//!
//! A role either may not take an action at all (`PERMISSION_DENIED` / 403), may take it on
//! what is its own (a customer's own reservations, payment methods, messages...), or on
//! everything. What a caller may not see answers exactly as if it did not exist: the callers
//! of [`Grant::covers`] turn "not yours" into "not found".

use uuid::Uuid;

use crate::{Principal, Role};

/// How much of an action a role may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Nothing,
    /// Only on what belongs to the caller (a customer: the token's subject).
    Own,
    Everything,
}

macro_rules! actions {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Every RPC of the command side and every data route of the query side.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Action { $($(#[$doc])* $name),* }

        impl Action {
            /// Every action, so that tests walk the whole table.
            pub const ALL: &'static [Action] = &[$(Action::$name),*];
        }
    };
}

actions! {
    ApplyReservation, CancelReservation, StartCleaning, CompleteCleaning,
    Pay, CancelPayment, VerifyPaymethod,
    RegisterPaymethod, ChangePaymethod,
    SendMessage,
    ForgetCustomer,
    /// `GET /dashboard` and `GET /dashboard/{id}`.
    ReadDashboard,
    /// `GET /reservations/{id}/timeline`.
    ReadTimeline,
    ReadMessages, ReadPayments, ReadPaymethods,
    /// `GET /summary`: the business at a glance (counts and takings), for the company.
    ReadSummary,
}

/// The table. Columns: customer, cleaner, admin, service.
pub const fn rule(action: Action) -> [Scope; 4] {
    use Action::*;
    use Scope::{Everything as All, Nothing as No, Own};
    match action {
        //                          customer cleaner admin service
        ApplyReservation => [Own, No, All, No],
        // The orphan policy cancels a reservation recorded on a payment it had refunded.
        CancelReservation => [Own, No, All, All],
        StartCleaning => [No, All, All, No],
        CompleteCleaning => [No, All, All, No],
        // The command side pays, the policies refund: services only.
        Pay => [No, No, All, All],
        CancelPayment => [No, No, All, All],
        VerifyPaymethod => [No, No, All, All],
        RegisterPaymethod => [Own, No, All, No],
        ChangePaymethod => [Own, No, All, No],
        // Messages are sent by the notification policy, or by the company's staff.
        SendMessage => [No, No, All, All],
        ForgetCustomer => [Own, No, All, No],
        // The cleaners see the rows the work needs: every reservation, and its history.
        ReadDashboard => [Own, All, All, No],
        ReadTimeline => [Own, All, All, No],
        ReadMessages => [Own, No, All, No],
        ReadPayments => [Own, No, All, No],
        ReadPaymethods => [Own, No, All, No],
        ReadSummary => [No, No, All, No],
    }
}

/// What a call may reach, and through which role: what it writes records the subject and
/// that role as its actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub subject: String,
    pub role: Role,
    /// `None`: everything; `Some(customer)`: only what belongs to that customer.
    pub only: Option<Uuid>,
}

impl Grant {
    /// Whether something belonging to `owner` is within reach.
    pub fn covers(&self, owner: Uuid) -> bool {
        self.only.is_none_or(|only| only == owner)
    }

    /// The customer a list must be limited to, if any.
    pub fn customer_filter(&self) -> Option<Uuid> {
        self.only
    }
}

/// The role may not take the action at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

impl Principal {
    /// The widest grant any of the principal's roles gives for `action`.
    pub fn may(&self, action: Action) -> Result<Grant, Denied> {
        let scopes = rule(action);
        let best = self
            .roles
            .iter()
            .map(|&role| (scopes[column(role)], role))
            .filter(|(scope, _)| *scope != Scope::Nothing)
            .max_by_key(|(scope, _)| *scope);
        let grant = |role, only| Grant {
            subject: self.subject.clone(),
            role,
            only,
        };
        match best {
            Some((Scope::Everything, role)) => Ok(grant(role, None)),
            Some((_, role)) => match self.customer_id() {
                Some(customer) => Ok(grant(role, Some(customer))),
                None => Err(Denied(
                    "a customer's token must carry their customer id (a UUID) as its subject"
                        .into(),
                )),
            },
            None => Err(Denied(format!(
                "{} may not {}",
                match self.roles.as_slice() {
                    [] => "a token without any of the roles customer, cleaner, admin or service"
                        .to_string(),
                    roles => format!(
                        "the role{} {}",
                        if roles.len() > 1 { "s" } else { "" },
                        roles
                            .iter()
                            .map(|r| r.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                },
                describe(action)
            ))),
        }
    }
}

fn column(role: Role) -> usize {
    match role {
        Role::Customer => 0,
        Role::Cleaner => 1,
        Role::Admin => 2,
        Role::Service => 3,
    }
}

/// The action in words, for refusals.
pub fn describe(action: Action) -> &'static str {
    use Action::*;
    match action {
        ApplyReservation => "apply for a reservation",
        CancelReservation => "cancel a reservation",
        StartCleaning => "start a cleaning",
        CompleteCleaning => "complete a cleaning",
        Pay => "take a payment",
        CancelPayment => "cancel a payment",
        VerifyPaymethod => "verify a payment method",
        RegisterPaymethod => "register a payment method",
        ChangePaymethod => "change a payment method",
        SendMessage => "send a message",
        ForgetCustomer => "forget a customer",
        ReadDashboard => "read the dashboard",
        ReadTimeline => "read a reservation's history",
        ReadMessages => "read messages",
        ReadPayments => "read payments",
        ReadPaymethods => "read payment methods",
        ReadSummary => "read the business summary",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CUSTOMER: &str = "0b7f3c1a-5d2e-4f6a-8b9c-1d2e3f4a5b6c";

    #[test]
    fn each_role_gets_exactly_its_column() {
        for &action in Action::ALL {
            for role in Role::ALL {
                let principal = Principal::new(CUSTOMER, [role]);
                let granted = principal.may(action);
                match rule(action)[column(role)] {
                    Scope::Nothing => assert!(granted.is_err(), "{role} {action:?}"),
                    Scope::Own => assert_eq!(
                        granted.unwrap().only,
                        Some(Uuid::parse_str(CUSTOMER).unwrap())
                    ),
                    Scope::Everything => assert_eq!(granted.unwrap().only, None),
                }
            }
        }
    }

    #[test]
    fn the_widest_role_wins_and_is_the_actor() {
        let both = Principal::new(CUSTOMER, [Role::Customer, Role::Admin]);
        let grant = both.may(Action::ReadPayments).unwrap();
        assert_eq!(grant.only, None);
        assert_eq!(grant.role, Role::Admin);
    }

    #[test]
    fn a_customer_needs_a_customer_id_as_subject_and_no_role_gets_nothing() {
        let odd = Principal::new("auth0|abc", [Role::Customer]);
        assert!(odd.may(Action::ReadDashboard).is_err());
        let nobody = Principal::new(CUSTOMER, []);
        let denied = nobody.may(Action::ReadDashboard).unwrap_err();
        assert!(denied.0.contains("without any of the roles"), "{denied}");
        let cleaner = Principal::new("c-1", [Role::Cleaner]);
        let denied = cleaner.may(Action::ReadPayments).unwrap_err();
        assert_eq!(denied.0, "the role cleaner may not read payments");
    }
}
