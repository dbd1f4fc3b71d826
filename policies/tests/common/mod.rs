//! The `policies` binary as the tests start it.

/// The `policies` process on `running`'s store and command side and the database `database`,
/// as its own service client; callers override what a test routes elsewhere (a later `env`
/// of the same name wins).
pub fn policies(running: &testkit::Running, database: &str) -> tokio::process::Command {
    let service = running.issuer.service_client();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_policies"));
    command
        .env("EVENT_STORE_URL", &running.event_store_url)
        .env("COMMAND_ENDPOINT", &running.command_url)
        // Payment is served beside the command side there.
        .env("PAYMENT_ENDPOINT", &running.command_url)
        .env("PGDATABASE", database)
        .env_remove("DATABASE_URL")
        .env("METRICS_LISTEN", "127.0.0.1:0")
        .env("AUTH_ISSUER", running.issuer.url())
        .env("AUTH_CLIENT_ID", &service.client_id)
        .env("AUTH_CLIENT_SECRET", &service.client_secret)
        .env("RUST_LOG", "error")
        .kill_on_drop(true);
    command
}
