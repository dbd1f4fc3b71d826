//! A running system for tests: a fresh embedded event store, and the command side with payment
//! (in one server, as park runs them, or payment apart), on loopback ports, reached through
//! real gRPC clients.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use access::client::AuthorizedChannel;
use access::Role;
use command_side::config::Config;
use command_side::proto::customer_service_client::CustomerServiceClient;
use command_side::proto::message_service_client::MessageServiceClient;
use command_side::proto::payment_service_client::PaymentServiceClient;
use command_side::proto::paymethod_service_client::PaymethodServiceClient;
use command_side::proto::reservation_service_client::ReservationServiceClient;
use command_side::proto::*;
use dev_issuer::Issuer;
use events::InMemoryKeys;
use tokio::sync::oneshot;
use tonic::transport::Channel;

pub use testkit::{as_role, issuer};

pub struct EventStoreUnderTest {
    pub port: u16,
    stop: Option<oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl EventStoreUnderTest {
    pub async fn start() -> EventStoreUnderTest {
        let dir = tempfile::tempdir().unwrap();
        let store = event_store::storage::Store::open(dir.path()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(event_store::server::serve(
            listener,
            store,
            Default::default(),
            async {
                let _ = stopped.await;
            },
        ));
        EventStoreUnderTest {
            port,
            stop: Some(stop),
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("esdb://127.0.0.1:{}?tls=false", self.port)
    }

    pub fn client(&self) -> kurrentdb::Client {
        kurrentdb::Client::new(self.url().parse().unwrap()).unwrap()
    }
}

/// The settings of a server of the command side and payment together.
pub struct Settings {
    pub commands: Config,
    pub provider: payment::config::ProviderRules,
}

/// Completes when the test stops a server.
type Stopped = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// One command-side process (in this test's runtime), stoppable.
pub struct CommandSide {
    pub port: u16,
    pub keys: Arc<InMemoryKeys>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl CommandSide {
    /// Binds `port` (0: any), then serves what `serve` makes of the listener until stopped.
    async fn spawn<F>(
        port: u16,
        keys: Arc<InMemoryKeys>,
        serve: impl FnOnce(tokio::net::TcpListener, Stopped) -> F,
    ) -> CommandSide
    where
        F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = oneshot::channel::<()>();
        let stopped: Stopped = Box::pin(async {
            let _ = stopped.await;
        });
        CommandSide {
            port,
            keys,
            stop: Some(stop),
            task: Some(tokio::spawn(serve(listener, stopped))),
        }
    }

    /// The command side with payment in the same server, calling it there.
    pub async fn start(
        event_store: &EventStoreUnderTest,
        issuer: &Issuer,
        port: u16,
        change: impl FnOnce(&mut Settings),
    ) -> CommandSide {
        let mut settings = Settings {
            commands: testkit::command_config(issuer),
            provider: Default::default(),
        };
        settings.commands.server.event_store_url = event_store.url();
        change(&mut settings);
        let keys = Arc::new(InMemoryKeys::default());
        Self::spawn(port, keys.clone(), |listener, stopped| {
            testkit::serve_commands_and_payment(
                settings.commands,
                settings.provider,
                keys,
                listener,
                stopped,
            )
        })
        .await
    }

    /// The command side alone: `change` says where payment is.
    pub async fn start_alone(
        event_store: &EventStoreUnderTest,
        issuer: &Issuer,
        change: impl FnOnce(&mut Config),
    ) -> CommandSide {
        let mut config = testkit::command_config(issuer);
        config.server.event_store_url = event_store.url();
        change(&mut config);
        let keys = Arc::new(InMemoryKeys::default());
        Self::spawn(0, keys.clone(), |listener, stopped| {
            config.server.listen = listener.local_addr().unwrap();
            command_side::serve(config, keys, listener, stopped)
        })
        .await
    }

    /// The payment service alone, on `port` (0: any).
    pub async fn payment(
        event_store: &EventStoreUnderTest,
        issuer: &Issuer,
        port: u16,
        change: impl FnOnce(&mut payment::config::Config),
    ) -> CommandSide {
        let mut config = testkit::payment_config(issuer);
        config.server.event_store_url = event_store.url();
        change(&mut config);
        Self::spawn(port, Default::default(), |listener, stopped| {
            config.server.listen = listener.local_addr().unwrap();
            payment::serve(config, listener, stopped)
        })
        .await
    }

    /// A channel without a token.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://127.0.0.1:{}", self.port))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

/// A client of every service, all calling as one principal.
pub struct Clients {
    pub reservations: ReservationServiceClient<AuthorizedChannel>,
    pub payments: PaymentServiceClient<AuthorizedChannel>,
    pub paymethods: PaymethodServiceClient<AuthorizedChannel>,
    pub messages: MessageServiceClient<AuthorizedChannel>,
    pub customers: CustomerServiceClient<AuthorizedChannel>,
}

impl Clients {
    pub fn new(channel: AuthorizedChannel) -> Clients {
        Clients {
            reservations: ReservationServiceClient::new(channel.clone()),
            payments: PaymentServiceClient::new(channel.clone()),
            paymethods: PaymethodServiceClient::new(channel.clone()),
            messages: MessageServiceClient::new(channel.clone()),
            customers: CustomerServiceClient::new(channel),
        }
    }
}

/// The event store, the command side and the issuer it trusts; the clients call as an
/// administrator, who may do everything (`as_role` for anyone else).
pub struct System {
    pub store: EventStoreUnderTest,
    pub issuer: Issuer,
    pub commands: CommandSide,
    pub channel: Channel,
    pub reservations: ReservationServiceClient<AuthorizedChannel>,
    pub payments: PaymentServiceClient<AuthorizedChannel>,
    pub paymethods: PaymethodServiceClient<AuthorizedChannel>,
    pub messages: MessageServiceClient<AuthorizedChannel>,
    pub customers: CustomerServiceClient<AuthorizedChannel>,
}

impl System {
    pub async fn start() -> System {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(change: impl FnOnce(&mut Settings)) -> System {
        let store = EventStoreUnderTest::start().await;
        let issuer = issuer().await;
        let commands = CommandSide::start(&store, &issuer, 0, change).await;
        let channel = commands.channel().await;
        let admin = Clients::new(testkit::as_admin(&channel, &issuer));
        System {
            reservations: admin.reservations,
            payments: admin.payments,
            paymethods: admin.paymethods,
            messages: admin.messages,
            customers: admin.customers,
            store,
            issuer,
            commands,
            channel,
        }
    }

    /// Clients calling as `subject` in `role`.
    pub fn as_role(&self, role: Role, subject: &str) -> Clients {
        Clients::new(as_role(&self.channel, &self.issuer, role, subject))
    }

    /// The raw events of a stream, as the event store holds them: (type, data, custom metadata).
    pub async fn stream(&self, name: &str) -> Vec<(String, serde_json::Value, serde_json::Value)> {
        let client = self.store.client();
        let mut out = Vec::new();
        let Ok(mut read) = client.read_stream(name, &Default::default()).await else {
            return out;
        };
        while let Ok(Some(e)) = read.next().await {
            let e = e.get_original_event();
            out.push((
                e.event_type.clone(),
                serde_json::from_slice(&e.data).unwrap_or_default(),
                serde_json::from_slice(&e.custom_metadata).unwrap_or_default(),
            ));
        }
        out
    }
}

pub fn tomorrow() -> String {
    (chrono::Utc::now().date_naive() + chrono::Days::new(1))
        .format("%Y-%m-%d")
        .to_string()
}

pub fn apply_request(customer_id: &str, price_cents: i64) -> ApplyReservationRequest {
    ApplyReservationRequest {
        request_id: uuid::Uuid::new_v4().to_string(),
        customer_id: customer_id.to_string(),
        customer_name: "Ada Lovelace".into(),
        place: "12 Analytical Row".into(),
        request_date: tomorrow(),
        price_cents,
        paymethod_kind: "credit_card".into(),
    }
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Field names of the INVALID_ARGUMENT details.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}
