//! Running a command against an aggregate: load its stream, decide, append with the stream's
//! revision as the expected revision.

use std::future::Future;

use domain::Aggregate;
use events::{Event, KeyStore};

use crate::errors::CommandError;
use crate::store::{EventStore, Loaded, RequestContext, StoreError, Written};

/// Which stream, and how the commands on it behave. Its aggregate's events are stored as the
/// system's [`Event`]s through `From`/`TryFrom` (declared once, in `events`).
pub struct Target<A: Aggregate> {
    pub stream: String,
    /// Whether a command that lost a race may simply be decided again on fresh state.
    pub safe_to_repeat: bool,
    /// For aggregates a customer owns: a caller allowed only their own finds someone else's
    /// exactly as if it did not exist. `None` for those only staff and services reach.
    pub owner: Option<Owner<A>>,
}

pub struct Owner<A: Aggregate> {
    /// The customer it belongs to, once it exists.
    pub of: fn(&A) -> Option<domain::CustomerId>,
    /// Its "there is no such ..." refusal.
    pub missing: fn() -> A::Error,
}

pub struct Executor<K> {
    pub store: EventStore<K>,
    pub retries: u32,
}

impl<K: KeyStore> Executor<K> {
    /// The target's aggregate as it stands, with what is needed to recognise a retry, if the
    /// caller may see it; otherwise the same refusal as for an aggregate that does not exist.
    async fn load<A: Aggregate>(
        &self,
        target: &Target<A>,
        context: &RequestContext,
        refusal: impl Fn(A::Error) -> CommandError,
    ) -> Result<Loaded<A>, CommandError>
    where
        A::Event: TryFrom<Event>,
    {
        let loaded = self.store.load::<A>(&target.stream).await?;
        if let Some(owner) = &target.owner {
            if (owner.of)(&loaded.state).is_some_and(|o| !context.grant.covers(o.uuid())) {
                return Err(refusal((owner.missing)()));
            }
        }
        Ok(loaded)
    }

    /// Refuses work for a customer who has been forgotten, before anything else happens.
    pub async fn ensure_not_forgotten(
        &self,
        customer: domain::CustomerId,
    ) -> Result<(), CommandError> {
        if cfg!(feature = "unsealed-baseline") {
            return Ok(());
        }
        match self.store.keys().is_forgotten(customer).await {
            Ok(false) => Ok(()),
            Ok(true) => Err(StoreError::from(events::KeyError::Forgotten).into()),
            Err(e) => Err(StoreError::from(e).into()),
        }
    }

    /// Makes sure the customer's key exists (creating it is a durable write), so that it can
    /// run beside other work, such as the payment, instead of inside the append.
    pub async fn prepare_key(&self, customer: domain::CustomerId) -> Result<(), CommandError> {
        if cfg!(feature = "unsealed-baseline") {
            return Ok(());
        }
        self.store
            .keys()
            .key_for_writing(customer)
            .await
            .map(|_| ())
            .map_err(|e| StoreError::from(e).into())
    }

    /// Decides `command` and appends what it causes; see [`Executor::execute_with`].
    pub async fn execute<A: Aggregate>(
        &self,
        target: &Target<A>,
        command: &A::Command,
        context: &RequestContext,
        refusal: impl Fn(A::Error) -> CommandError,
    ) -> Result<Written, CommandError>
    where
        A::Event: Into<Event> + TryFrom<Event>,
        A::Command: Clone,
    {
        let step = |_: &A| std::future::ready(Ok(Some(command.clone())));
        let executed = self.execute_with(target, context, refusal, step).await?;
        Ok(executed.written)
    }

    /// The one way a command runs: load the target, and unless this very request was recorded
    /// already (a retry: its original result), let `step` say what to do in this state: it may
    /// wait on something else first (a payment, a check with the provider) and answers with the
    /// command, or `None` when nothing needs doing. Then decide and append with the revision
    /// loaded. A concurrent write makes it all run again on fresh state (up to `retries` times)
    /// when the target allows that, and is ABORTED otherwise.
    pub async fn execute_with<A, F, Fut>(
        &self,
        target: &Target<A>,
        context: &RequestContext,
        refusal: impl Fn(A::Error) -> CommandError,
        step: F,
    ) -> Result<Executed<A>, CommandError>
    where
        A: Aggregate,
        A::Event: Into<Event> + TryFrom<Event>,
        F: Fn(&A) -> Fut,
        Fut: Future<Output = Result<Option<A::Command>, CommandError>>,
    {
        let mut attempt = 0;
        loop {
            let loaded = self.load(target, context, &refusal).await?;
            if let Some(earlier) = loaded.earlier_result(context.request_id, &target.stream) {
                return Ok(Executed {
                    written: earlier,
                    state: loaded.state,
                });
            }
            // Nothing to change: the answer is where the stream already stands.
            let (revision, position) = loaded.stored.last().map_or((0, 0), |s| (s.1, s.2));
            let unchanged = Written { revision, position };
            let Some(command) = step(&loaded.state).await? else {
                return Ok(Executed {
                    written: unchanged,
                    state: loaded.state,
                });
            };
            let decided = loaded.state.decide(&command).map_err(&refusal)?;
            if decided.is_empty() {
                return Ok(Executed {
                    written: unchanged,
                    state: loaded.state,
                });
            }
            let new: Vec<Event> = decided.iter().cloned().map(Into::into).collect();
            match self
                .store
                .append(&target.stream, loaded.revision, &new, context)
                .await
            {
                Ok(written) => {
                    let mut state = loaded.state;
                    for event in &decided {
                        state.apply(event);
                    }
                    return Ok(Executed { written, state });
                }
                Err(StoreError::Conflict) if target.safe_to_repeat && attempt < self.retries => {
                    attempt += 1;
                    tracing::debug!(stream = %target.stream, attempt, "concurrent write; deciding again");
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// [`Executor::execute_with`] for a command that starts its stream, shaped for the usual
    /// case, a request seen for the first time: no read before the append, whose expected
    /// revision ("no stream") checks that nothing is there. Anything else is answered from the
    /// stream as `execute_with` answers it: when the stream exists, it runs (`step` again
    /// included, which must therefore be safe to repeat); when `step` or the decision refuses,
    /// a retry of a recorded request still gets its original result, whatever happened since.
    pub async fn execute_new<A, F, Fut>(
        &self,
        target: &Target<A>,
        context: &RequestContext,
        refusal: impl Fn(A::Error) -> CommandError,
        step: F,
    ) -> Result<Executed<A>, CommandError>
    where
        A: Aggregate,
        A::Event: Into<Event> + TryFrom<Event>,
        F: Fn(&A) -> Fut,
        Fut: Future<Output = Result<Option<A::Command>, CommandError>>,
    {
        let fresh = A::default();
        let first = match step(&fresh).await {
            Ok(Some(command)) => {
                self.try_new(target, context, &refusal, fresh, &command)
                    .await
            }
            Ok(None) => Ok(None),
            Err(refused) => Err(refused),
        };
        match first {
            Ok(Some(executed)) => Ok(executed),
            // The stream exists (a retry, or nothing to do): from the stream.
            Ok(None) => self.execute_with(target, context, refusal, step).await,
            Err(refused) => {
                let loaded = self.load(target, context, &refusal).await?;
                match loaded.earlier_result(context.request_id, &target.stream) {
                    Some(earlier) => Ok(Executed {
                        written: earlier,
                        state: loaded.state,
                    }),
                    None => Err(refused),
                }
            }
        }
    }

    /// The first append of a new stream, `command` decided on the empty aggregate; `None` when
    /// the stream turned out to exist or there was nothing to write.
    async fn try_new<A: Aggregate>(
        &self,
        target: &Target<A>,
        context: &RequestContext,
        refusal: &impl Fn(A::Error) -> CommandError,
        mut state: A,
        command: &A::Command,
    ) -> Result<Option<Executed<A>>, CommandError>
    where
        A::Event: Into<Event>,
    {
        let decided = state.decide(command).map_err(refusal)?;
        if decided.is_empty() {
            return Ok(None);
        }
        let new: Vec<Event> = decided.iter().cloned().map(Into::into).collect();
        match self.store.append(&target.stream, None, &new, context).await {
            Ok(written) => {
                for event in &decided {
                    state.apply(event);
                }
                Ok(Some(Executed { written, state }))
            }
            Err(StoreError::Conflict) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// What running a command came to: where its stream stands, and the aggregate there.
#[derive(Debug)]
pub struct Executed<A> {
    pub written: Written,
    pub state: A,
}
