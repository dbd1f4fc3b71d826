//! The shape every aggregate shares, and a given-when-then harness for testing it.

/// An aggregate: state rebuilt from its events, deciding what a command causes.
pub trait Aggregate: Default + std::fmt::Debug {
    type Command;
    type Event: Clone + PartialEq + std::fmt::Debug;
    type Error: std::error::Error + PartialEq;

    /// The events `command` causes in this state, or why it is refused. Never mutates.
    fn decide(&self, command: &Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    /// Folds one event into the state. Events are facts: applying one never fails.
    fn apply(&mut self, event: &Self::Event);

    /// The state after `events`, in order.
    fn replay<'a>(events: impl IntoIterator<Item = &'a Self::Event>) -> Self
    where
        Self::Event: 'a,
    {
        let mut state = Self::default();
        for event in events {
            state.apply(event);
        }
        state
    }
}

/// Given-when-then tests of an aggregate, in the manner of `cqrs-es`'s `TestFramework`:
///
/// ```
/// # use domain::aggregate::given;
/// # use domain::message::{Message, SendMessage, MessageError};
/// # fn example(already_sent: domain::message::MessageEvent, again: SendMessage) {
/// given::<Message>([already_sent]).when(again).then_refused(MessageError::AlreadySent);
/// # }
/// ```
pub fn given<A: Aggregate>(events: impl IntoIterator<Item = A::Event>) -> Given<A> {
    let events: Vec<A::Event> = events.into_iter().collect();
    Given {
        state: A::replay(&events),
    }
}

pub struct Given<A: Aggregate> {
    state: A,
}

impl<A: Aggregate> Given<A> {
    pub fn when(self, command: A::Command) -> Then<A> {
        let outcome = self.state.decide(&command);
        Then {
            state: self.state,
            outcome,
        }
    }
}

pub struct Then<A: Aggregate> {
    state: A,
    outcome: Result<Vec<A::Event>, A::Error>,
}

impl<A: Aggregate> Then<A> {
    /// Asserts the events decided, and returns the state after applying them.
    #[track_caller]
    pub fn then_events(self, expected: impl IntoIterator<Item = A::Event>) -> A {
        let expected: Vec<A::Event> = expected.into_iter().collect();
        match self.outcome {
            Ok(events) => {
                assert_eq!(events, expected, "decided events");
                let mut state = self.state;
                for event in &events {
                    state.apply(event);
                }
                state
            }
            Err(error) => {
                panic!("expected events {expected:?}, but the command was refused: {error}")
            }
        }
    }

    #[track_caller]
    pub fn then_refused(self, expected: A::Error) {
        match self.outcome {
            Err(error) => assert_eq!(error, expected, "refusal"),
            Ok(events) => panic!("expected refusal {expected}, but got events {events:?}"),
        }
    }
}
