//! `GET /dashboard/changes` over real HTTP: rows arrive as the projector commits them, only
//! the caller's own, and a client that reconnects with `Last-Event-ID` gets what it missed.

mod common;

use std::time::Duration;

use command_side::proto::reservation_service_client::ReservationServiceClient;
use command_side::proto::CancelReservationRequest;
use serde_json::Value;

/// One Server-Sent Event.
#[derive(Debug)]
struct Sse {
    event: String,
    id: Option<String>,
    data: String,
}

/// Reads events off an open response.
struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    async fn open(http: &str, token: &str, last_event_id: Option<&str>) -> Events {
        let mut request = reqwest::Client::new()
            .get(format!("{http}/dashboard/changes"))
            .bearer_auth(token);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Events {
            response,
            buffer: String::new(),
        }
    }

    /// The next event (keep-alive comments skipped); fails the test after 20 s of silence.
    async fn next(&mut self) -> Sse {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = Sse {
                    event: "message".into(),
                    id: None,
                    data: String::new(),
                };
                let mut any = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        event.event = v.into();
                        any = true;
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        event.id = Some(v.into());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        event.data.push_str(v);
                        any = true;
                    }
                }
                if any {
                    return event;
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(20), self.response.chunk())
                .await
                .expect("no event within 20 s")
                .unwrap()
                .expect("the stream ended");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Events up to the first `position` at or past `position`; returns them and that id.
    async fn until(&mut self, position: i64) -> (Vec<Sse>, String) {
        let mut seen = Vec::new();
        loop {
            let event = self.next().await;
            if event.event == "position" {
                let at: i64 = event.data.parse().unwrap();
                assert_eq!(event.id.as_deref(), Some(event.data.as_str()));
                if at >= position {
                    return (seen, event.data);
                }
            } else {
                seen.push(event);
            }
        }
    }
}

fn rows(events: &[Sse]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e.event == "reservation")
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_arrive_as_projected_only_the_callers_own_and_resume_after_a_reconnect() {
    let running = testkit::Running::start().await;
    let http = common::read_side(&running, Duration::from_secs(5)).await;
    let customer = uuid::Uuid::new_v4().to_string();
    let token = |role, subject: &str| {
        running
            .issuer
            .token(subject, &[role], Duration::from_secs(300))
            .unwrap()
    };
    let ada = token(access::Role::Customer, &customer);
    let admin = token(access::Role::Admin, "admin-1");

    // Opened before anything happens: the first event says where the stream stands.
    let mut mine = Events::open(&http, &ada, None).await;
    let mut all = Events::open(&http, &admin, None).await;
    let first = mine.next().await;
    assert_eq!(first.event, "position", "{first:?}");
    let first = all.next().await;
    assert_eq!(
        first.event, "summary",
        "the company sees the summary: {first:?}"
    );

    let mut reservations =
        ReservationServiceClient::new(running.commands_as(access::Role::Customer, &customer));
    let stranger = ReservationServiceClient::new(running.commands.clone())
        .apply_reservation(testkit::apply_request(
            &uuid::Uuid::new_v4().to_string(),
            9_900,
        ))
        .await
        .unwrap()
        .into_inner();
    let applied = reservations
        .apply_reservation(testkit::apply_request(&customer, 12_500))
        .await
        .unwrap()
        .into_inner();
    let last = stranger.position.max(applied.position) as i64;

    // The customer's stream brings her reservation and never the stranger's.
    let (events, _) = mine.until(last).await;
    let seen = rows(&events);
    assert!(
        seen.iter()
            .any(|r| r["reservation_id"] == applied.id.as_str()
                && r["status"] == "requested"
                && r["customer_name"] == "Ada Lovelace"),
        "{events:?}"
    );
    assert!(
        seen.iter().all(|r| r["customer_id"] == customer.as_str()),
        "another customer's row reached her: {events:?}"
    );
    assert!(events.iter().all(|e| e.event != "summary"), "{events:?}");
    // The administrator's brings both, and the summary counts them.
    let (events, _) = all.until(last).await;
    let ids: Vec<Value> = rows(&events)
        .iter()
        .map(|r| r["reservation_id"].clone())
        .collect();
    assert!(
        ids.contains(&Value::from(applied.id.as_str())),
        "{events:?}"
    );
    assert!(
        ids.contains(&Value::from(stranger.id.as_str())),
        "{events:?}"
    );
    let summary: Value = serde_json::from_str(
        &events
            .iter()
            .rev()
            .find(|e| e.event == "summary")
            .expect("a summary after the change")
            .data,
    )
    .unwrap();
    assert_eq!(
        summary["reservations_by_status"][0],
        serde_json::json!({"status": "requested", "reservations": 2}),
        "{summary}"
    );
    assert_eq!(summary["payments_by_day"][0]["approved"], 2, "{summary}");
    assert_eq!(
        summary["payments_by_day"][0]["approved_cents"],
        12_500 + 9_900,
        "{summary}"
    );

    // A cancellation changes the row in place.
    let cancelled = reservations
        .cancel_reservation(CancelReservationRequest {
            request_id: String::new(),
            reservation_id: applied.id.clone(),
            reason: "moved".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let (events, resume_from) = mine.until(cancelled.position as i64).await;
    assert!(
        rows(&events)
            .iter()
            .any(|r| r["reservation_id"] == applied.id.as_str() && r["status"] == "cancelled"),
        "{events:?}"
    );

    // Gone for a while: what happens meanwhile arrives when it comes back with its last id.
    drop(mine);
    let missed = reservations
        .apply_reservation(testkit::apply_request(&customer, 7_000))
        .await
        .unwrap()
        .into_inner();
    // Only the customer's row changes meanwhile: wait until it is projected.
    let (_, _) = all.until(missed.position as i64).await;
    let mut again = Events::open(&http, &ada, Some(&resume_from)).await;
    let (events, _) = again.until(missed.position as i64).await;
    let seen = rows(&events);
    assert_eq!(seen.len(), 1, "exactly what changed since: {events:?}");
    assert_eq!(seen[0]["reservation_id"], missed.id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_refuses_what_the_other_routes_refuse() {
    let running = testkit::Running::start().await;
    let http = common::read_side(&running, Duration::from_secs(5)).await;
    let client = reqwest::Client::new();
    let get = |path: &str, token: Option<String>| {
        let mut request = client.get(format!("{http}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let token = |role| {
        running
            .issuer
            .token("someone", &[role], Duration::from_secs(60))
            .ok()
    };
    let response = get("/dashboard/changes", None).await.unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers().contains_key("www-authenticate"));
    let response = get("/dashboard/changes", token(access::Role::Service))
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let response = get(
        "/dashboard/changes?since=yesterday",
        token(access::Role::Admin),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["parameter"], "since", "{body}");
    let response = get("/dashboard/changes?since=-1", token(access::Role::Admin))
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let response = get("/dashboard/changes?sinse=1", token(access::Role::Admin))
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    // The summary is the company's.
    for (role, status) in [
        (access::Role::Customer, 403),
        (access::Role::Cleaner, 403),
        (access::Role::Admin, 200),
    ] {
        let response = get("/summary", token(role)).await.unwrap();
        assert_eq!(response.status(), status, "{role}");
    }
}
