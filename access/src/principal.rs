//! Who is calling: the token's subject and the roles it carries.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The roles of DOMAIN.md. A token may carry several; each call is granted through the one
/// that allows the most (see [`crate::rules`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A customer; the token's subject is their customer id.
    Customer,
    /// A cleaner of the cleaning company.
    Cleaner,
    /// May do and see everything.
    Admin,
    /// One of the system's own services (client-credentials tokens only).
    Service,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Customer, Role::Cleaner, Role::Admin, Role::Service];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Cleaner => "cleaner",
            Role::Admin => "admin",
            Role::Service => "service",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A caller whose token was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`: a customer's id, a staff member's or a service client's id.
    pub subject: String,
    /// The roles this system knows, in [`Role`] order; others the token carries are ignored.
    pub roles: Vec<Role>,
}

impl Principal {
    pub fn new(subject: impl Into<String>, roles: impl IntoIterator<Item = Role>) -> Principal {
        let mut roles: Vec<Role> = roles.into_iter().collect();
        roles.sort();
        roles.dedup();
        Principal {
            subject: subject.into(),
            roles,
        }
    }

    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// The customer this principal is, when it is one: the subject read as a customer id.
    pub fn customer_id(&self) -> Option<Uuid> {
        if self.has(Role::Customer) {
            Uuid::parse_str(&self.subject).ok()
        } else {
            None
        }
    }
}
