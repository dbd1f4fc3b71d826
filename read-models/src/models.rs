//! The read models the projector keeps, declared once: each has its own checkpoint (named by
//! [`ReadModel::name`]) and its own tables, so that each can be rebuilt on its own
//! (`projector rebuild <name>`) and a query waits for exactly what it reads.

/// A read model of the projector's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReadModel {
    /// Reservations with their payment and last notification, the payments and payment
    /// methods lists, and the live page's summary counters.
    Dashboard,
    /// The messages sent to customers.
    Messages,
    /// Each reservation's history, event by event.
    Timeline,
}

impl ReadModel {
    pub const ALL: [ReadModel; 3] = [
        ReadModel::Dashboard,
        ReadModel::Messages,
        ReadModel::Timeline,
    ];

    /// Its checkpoint's name, and its name on the projector's command line.
    pub const fn name(self) -> &'static str {
        match self {
            ReadModel::Dashboard => "dashboard",
            ReadModel::Messages => "messages",
            ReadModel::Timeline => "timeline",
        }
    }

    pub fn from_name(name: &str) -> Option<ReadModel> {
        ReadModel::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The tables it alone writes: what a rebuild of it replaces.
    pub const fn tables(self) -> &'static [&'static str] {
        match self {
            ReadModel::Dashboard => &[
                "dashboard",
                "reservations_by_status",
                "payments",
                "payments_by_day",
                "paymethods",
            ],
            ReadModel::Messages => &["messages"],
            ReadModel::Timeline => &["timeline"],
        }
    }
}

/// Every read model's checkpoint name, for queries over the `checkpoints` table.
pub fn names() -> Vec<&'static str> {
    ReadModel::ALL.iter().map(|m| m.name()).collect()
}

/// The log position every read model has applied, in SQL: `$1` is [`names()`]. The smallest
/// of them, and 0 while one has applied nothing yet.
pub const APPLIED_POSITION: &str = "SELECT CASE WHEN count(*) = cardinality($1::text[])
                 THEN min(commit_position) ELSE 0 END
            FROM checkpoints WHERE projection = ANY($1::text[])";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found_again_and_tables_belong_to_one_model() {
        for model in ReadModel::ALL {
            assert_eq!(ReadModel::from_name(model.name()), Some(model));
        }
        let mut tables: Vec<_> = ReadModel::ALL.iter().flat_map(|m| m.tables()).collect();
        let count = tables.len();
        tables.sort();
        tables.dedup();
        assert_eq!(tables.len(), count, "a table written by two read models");
        assert_eq!(ReadModel::from_name("everything"), None);
    }
}
