//! The business workload: customers applying, paying, cancelling, changing payment methods and
//! being forgotten, a cleaner starting and completing cleanings, and people reading the
//! dashboard. Every command is retried with the same request id until it gets a definite
//! answer, as a well-behaved client does; each answer goes into the ledger the checks read.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use access::client::{AuthorizedChannel, Credentials, WithToken};
use access::Role;
use api_contract::customer_service_client::CustomerServiceClient;
use api_contract::paymethod_service_client::PaymethodServiceClient;
use api_contract::reservation_service_client::ReservationServiceClient;
use api_contract::*;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;
use uuid::Uuid;

/// How long one attempt may take before the client gives up on it and retries.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a command is retried before it counts as unresolved.
const GIVE_UP_AFTER: Duration = Duration::from_secs(120);

/// One command, as sent (and re-sent) to the command side.
#[derive(Debug, Clone)]
pub enum Call {
    Apply(ApplyReservationRequest),
    Cancel(CancelReservationRequest),
    Start(StartCleaningRequest),
    Complete(CompleteCleaningRequest),
    Register(RegisterPaymethodRequest),
    Change(ChangePaymethodRequest),
    Forget(ForgetCustomerRequest),
}

impl Call {
    pub fn request_id(&self) -> Uuid {
        let text = match self {
            Call::Apply(r) => &r.request_id,
            Call::Cancel(r) => &r.request_id,
            Call::Start(r) => &r.request_id,
            Call::Complete(r) => &r.request_id,
            Call::Register(r) => &r.request_id,
            Call::Change(r) => &r.request_id,
            Call::Forget(r) => &r.request_id,
        };
        Uuid::parse_str(text).unwrap_or_default()
    }

    pub fn name(&self) -> &'static str {
        match self {
            Call::Apply(_) => "ApplyReservation",
            Call::Cancel(_) => "CancelReservation",
            Call::Start(_) => "StartCleaning",
            Call::Complete(_) => "CompleteCleaning",
            Call::Register(_) => "RegisterPaymethod",
            Call::Change(_) => "ChangePaymethod",
            Call::Forget(_) => "ForgetCustomer",
        }
    }

    async fn send(&self, channel: AuthorizedChannel) -> Result<CommandReply, tonic::Status> {
        fn timed<T>(message: T) -> tonic::Request<T> {
            let mut request = tonic::Request::new(message);
            request.set_timeout(ATTEMPT_TIMEOUT);
            request
        }
        let reply = match self {
            Call::Apply(r) => {
                ReservationServiceClient::new(channel)
                    .apply_reservation(timed(r.clone()))
                    .await
            }
            Call::Cancel(r) => {
                ReservationServiceClient::new(channel)
                    .cancel_reservation(timed(r.clone()))
                    .await
            }
            Call::Start(r) => {
                ReservationServiceClient::new(channel)
                    .start_cleaning(timed(r.clone()))
                    .await
            }
            Call::Complete(r) => {
                ReservationServiceClient::new(channel)
                    .complete_cleaning(timed(r.clone()))
                    .await
            }
            Call::Register(r) => {
                PaymethodServiceClient::new(channel)
                    .register_paymethod(timed(r.clone()))
                    .await
            }
            Call::Change(r) => {
                PaymethodServiceClient::new(channel)
                    .change_paymethod(timed(r.clone()))
                    .await
            }
            Call::Forget(r) => {
                CustomerServiceClient::new(channel)
                    .forget_customer(timed(r.clone()))
                    .await
            }
        };
        reply.map(|r| r.into_inner())
    }
}

/// How a command ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    Acknowledged(CommandReply),
    Refused {
        code: Code,
        message: String,
    },
    /// Still failing when the client gave up.
    Unresolved(String),
}

/// A command, who sent it, and how it ended.
#[derive(Debug, Clone)]
pub struct Record {
    pub call: Call,
    pub token: Arc<str>,
    /// The customer the command is about, if any.
    pub customer: Option<Uuid>,
    pub outcome: Outcome,
    pub attempts: u32,
    /// Attempts answered INTERNAL on the way.
    pub internal_errors: u32,
}

/// A customer as the workload knows them.
pub struct Customer {
    pub id: Uuid,
    pub name: String,
    pub place: String,
    pub token: Arc<str>,
    pub forgotten: bool,
    pub paymethods: Vec<Uuid>,
}

/// What the workload knows and has done.
pub struct Workload {
    pub customers: Mutex<Vec<Customer>>,
    /// Reservations acknowledged so far, with their customer's index.
    pub reservations: Mutex<Vec<(Uuid, usize)>>,
    pub ledger: Mutex<Vec<Record>>,
    pub queries: Mutex<QueryTally>,
    cleaner: Arc<str>,
    admin: Arc<str>,
    commands_url: String,
    query_url: String,
    http: reqwest::Client,
}

/// The dashboard reads and what they answered.
#[derive(Debug, Default, Clone)]
pub struct QueryTally {
    pub ok: u64,
    /// 503: the read models are not reachable (an outage), with `Retry-After`.
    pub unavailable: u64,
    /// No answer at all: the query side was down.
    pub unreachable: u64,
    /// Anything else: each is a violation.
    pub wrong: Vec<String>,
}

impl Workload {
    pub fn new(
        issuer: &dev_issuer::Issuer,
        customers: usize,
        seed: u64,
        commands_url: String,
        query_url: String,
    ) -> anyhow::Result<Workload> {
        let day = Duration::from_secs(24 * 3600);
        let customers = (0..customers)
            .map(|n| {
                let id = Uuid::from_u64_pair(seed, n as u64 + 1);
                Ok(Customer {
                    id,
                    name: format!("Chaos Customer {n} of run {seed}"),
                    place: format!("Fault Line {n}, run {seed}"),
                    token: issuer
                        .token(&id.to_string(), &[Role::Customer], day)?
                        .into(),
                    forgotten: false,
                    paymethods: Vec::new(),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Workload {
            customers: Mutex::new(customers),
            reservations: Mutex::default(),
            ledger: Mutex::default(),
            queries: Mutex::default(),
            cleaner: issuer
                .token(
                    dev_issuer::default_subject(Role::Cleaner),
                    &[Role::Cleaner],
                    day,
                )?
                .into(),
            admin: issuer
                .token(
                    dev_issuer::default_subject(Role::Admin),
                    &[Role::Admin],
                    day,
                )?
                .into(),
            commands_url,
            query_url,
            http: reqwest::Client::builder()
                .timeout(ATTEMPT_TIMEOUT)
                .build()?,
        })
    }

    /// A channel of its own through the balancer: each new one may land on the other replica.
    pub fn channel(&self) -> anyhow::Result<Channel> {
        Ok(Endpoint::from_shared(self.commands_url.clone())?
            .connect_timeout(Duration::from_secs(1))
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(2))
            .connect_lazy())
    }

    /// One client: commands chosen from its seed, one after the other, until `stop`.
    /// `pace` is the mean time from one command to the next.
    pub async fn client(
        self: Arc<Self>,
        seed: u64,
        pace: Duration,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut channel = self.channel()?;
        while !*stop.borrow() {
            let began = Instant::now();
            let Some((call, token, customer)) = self.next_call(&mut rng) else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let record = self.run(call, token, customer, &mut channel).await?;
            self.learn(&record);
            self.ledger
                .lock()
                .map_err(|_| anyhow::anyhow!("ledger poisoned"))?
                .push(record);
            let next = pace.mul_f64(0.5 + rng.f64());
            tokio::time::sleep(next.saturating_sub(began.elapsed())).await;
        }
        Ok(())
    }

    /// Sends `call` until it is answered (a reply or a refusal), with the same request id each
    /// time and a new connection after a failed one.
    pub async fn run(
        &self,
        call: Call,
        token: Arc<str>,
        customer: Option<Uuid>,
        channel: &mut Channel,
    ) -> anyhow::Result<Record> {
        let started = Instant::now();
        let mut attempts = 0;
        let mut internal_errors = 0;
        let mut backoff = Duration::from_millis(50);
        let outcome = loop {
            attempts += 1;
            let authorized = WithToken::new(channel.clone(), Credentials::Bearer(token.clone()));
            let answer = tokio::time::timeout(ATTEMPT_TIMEOUT, call.send(authorized)).await;
            let why = match answer {
                Ok(Ok(reply)) => break Outcome::Acknowledged(reply),
                Ok(Err(status)) if is_definite(status.code()) => {
                    break Outcome::Refused {
                        code: status.code(),
                        message: status.message().to_string(),
                    }
                }
                Ok(Err(status)) => {
                    if status.code() == Code::Internal {
                        internal_errors += 1;
                    }
                    format!("{:?}: {}", status.code(), status.message())
                }
                Err(_) => "no answer in time".to_string(),
            };
            if started.elapsed() > GIVE_UP_AFTER {
                break Outcome::Unresolved(why);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
            *channel = self.channel()?;
        };
        Ok(Record {
            call,
            token,
            customer,
            outcome,
            attempts,
            internal_errors,
        })
    }

    /// The next command: mostly what customers and the cleaner do, with some that must be
    /// refused (a date in the past, an amount the provider declines, a finished reservation).
    fn next_call(&self, rng: &mut fastrand::Rng) -> Option<(Call, Arc<str>, Option<Uuid>)> {
        let request_id = Uuid::from_u64_pair(rng.u64(..), rng.u64(..)).to_string();
        let mut customers = self.customers.lock().ok()?;
        let reservations = self.reservations.lock().ok()?;
        let active: Vec<usize> = (0..customers.len())
            .filter(|i| !customers[*i].forgotten)
            .collect();
        let who = *rng.choice(&active)?;
        let customer = &customers[who];
        let date = |days: u64| {
            (chrono::Utc::now().date_naive() + chrono::Days::new(days))
                .format("%Y-%m-%d")
                .to_string()
        };
        let apply = |price_cents: i64, request_date: String| {
            Call::Apply(ApplyReservationRequest {
                request_id: request_id.clone(),
                customer_id: customer.id.to_string(),
                customer_name: customer.name.clone(),
                place: customer.place.clone(),
                request_date,
                price_cents,
                paymethod_kind: "credit_card".into(),
            })
        };
        let mine = (Some(customer.id), customer.token.clone());
        let reservation = rng.choice(reservations.iter()).copied();
        let (call, (about, token)) = match rng.u32(0..100) {
            0..=34 => (apply(rng.i64(2_000..90_000), date(rng.u64(1..30))), mine),
            35..=37 => (apply(10_000, "2020-01-01".into()), mine),
            38..=40 => (apply(250_000, date(3)), mine),
            41..=55 => {
                let (id, owner) = reservation?;
                (
                    Call::Start(StartCleaningRequest {
                        request_id,
                        reservation_id: id.to_string(),
                        cleaner: "Grace".into(),
                    }),
                    (Some(customers[owner].id), self.cleaner.clone()),
                )
            }
            56..=69 => {
                let (id, owner) = reservation?;
                (
                    Call::Complete(CompleteCleaningRequest {
                        request_id,
                        reservation_id: id.to_string(),
                    }),
                    (Some(customers[owner].id), self.cleaner.clone()),
                )
            }
            70..=81 => {
                let (id, owner) = reservation?;
                let owner = &customers[owner];
                (
                    Call::Cancel(CancelReservationRequest {
                        request_id,
                        reservation_id: id.to_string(),
                        reason: "plans changed".into(),
                    }),
                    (Some(owner.id), owner.token.clone()),
                )
            }
            82..=89 => (
                Call::Register(RegisterPaymethodRequest {
                    request_id,
                    customer_id: customer.id.to_string(),
                    customer_name: customer.name.clone(),
                    kind: "debit_card".into(),
                    number: card_number(rng),
                }),
                mine,
            ),
            90..=97 => {
                let paymethod = *rng.choice(&customer.paymethods)?;
                (
                    Call::Change(ChangePaymethodRequest {
                        request_id,
                        paymethod_id: paymethod.to_string(),
                        kind: "credit_card".into(),
                        number: card_number(rng),
                    }),
                    mine,
                )
            }
            _ => {
                // At most a quarter of the customers are forgotten.
                if customers.iter().filter(|c| c.forgotten).count() * 4 >= customers.len() {
                    return None;
                }
                let call = Call::Forget(ForgetCustomerRequest {
                    request_id,
                    customer_id: customer.id.to_string(),
                });
                let (about, token) = mine;
                customers[who].forgotten = true;
                return Some((call, token, about));
            }
        };
        Some((call, token, about))
    }

    /// Remembers what an acknowledged command created.
    fn learn(&self, record: &Record) {
        let Outcome::Acknowledged(reply) = &record.outcome else {
            return;
        };
        let Ok(id) = Uuid::parse_str(&reply.id) else {
            return;
        };
        let (Ok(mut customers), Ok(mut reservations)) =
            (self.customers.lock(), self.reservations.lock())
        else {
            return;
        };
        let Some(index) = customers.iter().position(|c| Some(c.id) == record.customer) else {
            return;
        };
        match &record.call {
            Call::Apply(_) => reservations.push((id, index)),
            Call::Register(_) => customers[index].paymethods.push(id),
            _ => {}
        }
    }

    /// Reads the dashboard until `stop`, as a random customer or the administrator, and
    /// tallies the answers: a customer must only ever see their own reservations.
    pub async fn reader(
        self: Arc<Self>,
        seed: u64,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let mut rng = fastrand::Rng::with_seed(seed);
        while !*stop.borrow() {
            let (token, customer) = {
                let customers = self
                    .customers
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?;
                match rng.choice(customers.iter()) {
                    Some(c) if rng.bool() => (c.token.clone(), Some(c.id)),
                    _ => (self.admin.clone(), None),
                }
            };
            let answer = self
                .http
                .get(format!("{}/dashboard?limit=50", self.query_url))
                .bearer_auth(&token)
                .send()
                .await;
            let verdict = match answer {
                Err(_) => Verdict::Unreachable,
                Ok(response) => match response.status().as_u16() {
                    200 => match response.json::<serde_json::Value>().await {
                        Ok(page) => match customer {
                            Some(me) if !only_own(&page, me) => Verdict::Wrong(format!(
                                "customer {me} was shown someone else's reservation"
                            )),
                            _ => Verdict::Ok,
                        },
                        Err(e) => Verdict::Wrong(format!("200 with an unreadable body: {e}")),
                    },
                    503 if response.headers().contains_key("retry-after") => Verdict::Unavailable,
                    other => Verdict::Wrong(format!(
                        "GET /dashboard answered {other}: {}",
                        response.text().await.unwrap_or_default()
                    )),
                },
            };
            {
                let mut tally = self
                    .queries
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?;
                match verdict {
                    Verdict::Ok => tally.ok += 1,
                    Verdict::Unavailable => tally.unavailable += 1,
                    Verdict::Unreachable => tally.unreachable += 1,
                    Verdict::Wrong(what) => tally.wrong.push(what),
                }
            }
            tokio::time::sleep(Duration::from_millis(rng.u64(50..150))).await;
        }
        Ok(())
    }

    pub fn admin_token(&self) -> Arc<str> {
        self.admin.clone()
    }

    pub fn query_url(&self) -> &str {
        &self.query_url
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }
}

enum Verdict {
    Ok,
    Unavailable,
    Unreachable,
    Wrong(String),
}

fn only_own(page: &serde_json::Value, me: Uuid) -> bool {
    let me = me.to_string();
    page["items"].as_array().is_some_and(|items| {
        items
            .iter()
            .all(|item| item["customer_id"].as_str() == Some(me.as_str()))
    })
}

/// Codes that answer the command: retrying with the same request id would get the same.
fn is_definite(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::NotFound
            | Code::PermissionDenied
            | Code::AlreadyExists
            | Code::OutOfRange
            | Code::Unauthenticated
            | Code::Unimplemented
    )
}

/// A 16-digit card number with a valid check digit; one in ten ends in 0000, which the
/// simulated provider refuses.
fn card_number(rng: &mut fastrand::Rng) -> String {
    let mut digits: Vec<u32> = (0..15).map(|_| rng.u32(0..10)).collect();
    digits[0] = 4;
    if rng.u32(0..10) == 0 {
        // ...0000 and the check digit: the last four are 000 plus the check digit, so make
        // the three before the check digit zero and find a check digit of 0.
        for d in &mut digits[11..15] {
            *d = 0;
        }
        // Adjust an earlier digit until the check digit comes out as 0.
        for candidate in 0..10 {
            digits[10] = candidate;
            if check_digit(&digits) == 0 {
                break;
            }
        }
    }
    let check = check_digit(&digits);
    digits.push(check);
    digits.iter().map(|d| char::from(b'0' + *d as u8)).collect()
}

/// The Luhn check digit for `digits`.
fn check_digit(digits: &[u32]) -> u32 {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 0 {
                let doubled = d * 2;
                if doubled > 9 {
                    doubled - 9
                } else {
                    doubled
                }
            } else {
                *d
            }
        })
        .sum();
    (10 - sum % 10) % 10
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_numbers_pass_the_check_and_some_end_in_zeros() {
        let mut rng = fastrand::Rng::with_seed(3);
        let numbers: Vec<String> = (0..200).map(|_| card_number(&mut rng)).collect();
        for n in &numbers {
            assert_eq!(n.len(), 16);
            assert!(domain::MaskedNumber::mask(domain::PaymethodKind::DebitCard, n).is_ok());
        }
        assert!(numbers.iter().any(|n| n.ends_with("0000")));
    }
}
