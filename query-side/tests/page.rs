//! The dashboard page in a real browser: headless Chromium (Debian's `chromium` package) loads
//! it from the running query side after a reservation is applied and another cancelled, and
//! the test reads what a person would see. Signed out it shows nothing; it signs in at the
//! issuer (authorization code with PKCE; the development issuer takes `login_hint` for the
//! role picker's answer) and then shows what the signed-in customer may see, and nothing else.
//! An open page follows changes made through gRPC without a reload.

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::time::Duration;

use command_side::proto::reservation_service_client::ReservationServiceClient;
use command_side::proto::CancelReservationRequest;

use browser::{chromium, HEADLESS};

/// The page's DOM after its scripts ran (virtual time lets the fetches complete).
async fn rendered(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(chromium())
        .args(HEADLESS)
        .args(["--virtual-time-budget=5000", "--dump-dom"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .output()
        .await
        .expect("chromium is not installed (apt-get install chromium, as .ci/run does)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

async fn screenshot(url: &str, path: &str) {
    let profile = tempfile::tempdir().unwrap();
    let status = tokio::process::Command::new(chromium())
        .args(HEADLESS)
        .args([
            "--virtual-time-budget=5000",
            "--window-size=1200,700",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={path}"))
        .arg(url)
        .status()
        .await
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_sees_reservations_and_their_state() {
    let running = testkit::Running::start().await;
    let http = common::read_side(&running, Duration::from_secs(5)).await;

    let customer = uuid::Uuid::new_v4().to_string();
    let mut reservations =
        ReservationServiceClient::new(running.commands_as(access::Role::Customer, &customer));
    // Someone else's reservation (applied by an administrator), which the customer must not see.
    let mut stranger = testkit::apply_request(&uuid::Uuid::new_v4().to_string(), 9_900);
    stranger.customer_name = "Grace Hopper".into();
    stranger.place = "1 Compiler Lane".into();
    let strangers = ReservationServiceClient::new(running.commands.clone())
        .apply_reservation(stranger)
        .await
        .unwrap()
        .into_inner();
    let kept = reservations
        .apply_reservation(testkit::apply_request(&customer, 12_500))
        .await
        .unwrap()
        .into_inner();
    let other = reservations
        .apply_reservation(testkit::apply_request(&customer, 7_000))
        .await
        .unwrap()
        .into_inner();
    let cancelled = reservations
        .cancel_reservation(CancelReservationRequest {
            request_id: String::new(),
            reservation_id: other.id.clone(),
            reason: "moved".into(),
        })
        .await
        .unwrap()
        .into_inner();
    // Wait until the read model shows the cancellation, as the page will.
    let admin = running
        .issuer
        .token("admin-1", &[access::Role::Admin], Duration::from_secs(60))
        .unwrap();
    let response = reqwest::Client::new()
        .get(format!(
            "{http}/dashboard?min_position={}",
            cancelled.position
        ))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-read-model-consistent"], "true");

    // Signed out: a way to sign in, and nothing else.
    let dom = rendered(&format!("{http}/")).await;
    assert!(dom.contains("Cleaning Service Park"), "{dom}");
    assert!(dom.contains(r#"id="sign-in""#), "{dom}");
    assert_eq!(dom.matches(r#"class="reservation""#).count(), 0, "{dom}");
    for personal in ["Ada Lovelace", "12 Analytical Row", "Grace Hopper"] {
        assert!(
            !dom.contains(personal),
            "{personal} shown signed out: {dom}"
        );
    }

    // Signed in as the customer: their two reservations, not the stranger's.
    let signed_in = format!("{http}/?login_hint=customer:{customer}");
    // PAGE_SCREENSHOT=file.png keeps a picture of the page, to look at it as a person would.
    if let Ok(path) = std::env::var("PAGE_SCREENSHOT") {
        screenshot(&signed_in, &path).await;
    }
    let dom = rendered(&signed_in).await;
    assert!(dom.contains(&format!("Signed in as {customer}")), "{dom}");
    assert!(
        !dom.contains("Grace Hopper") && !dom.contains(&strangers.id),
        "{dom}"
    );
    assert_eq!(dom.matches(r#"class="reservation""#).count(), 2, "{dom}");
    assert!(dom.contains(&format!(r#"data-id="{}""#, kept.id)));
    assert!(dom.contains("Ada Lovelace") && dom.contains("12 Analytical Row"));
    assert!(dom.contains("125.00") && dom.contains("70.00"));
    assert!(
        dom.contains(r#"class="status status-cancelled">cancelled"#),
        "{dom}"
    );
    assert!(
        dom.contains(r#"class="status status-requested">requested"#),
        "{dom}"
    );
    assert!(dom.contains("debit card · approved"), "{dom}");
    assert!(dom.contains("2 reservation(s)"), "{dom}");
    assert!(
        dom.contains(r#"<section id="timeline" hidden"#),
        "a history is open: {dom}"
    );

    // A link to one reservation opens its history, every event with its request and who acted.
    let dom = rendered(&format!("{signed_in}#{}", other.id)).await;
    assert!(dom.contains(&format!("History of {}", other.id)), "{dom}");
    for seen in [
        "Payment of 70.00 approved",
        "Cleaning requested for",
        "Reservation cancelled: moved",
        "ReservationCancelled",
        &format!("by customer {customer}"),
    ] {
        assert!(dom.contains(seen), "{seen} missing from {dom}");
    }
    assert!(!dom.contains(r#"<section id="timeline" hidden"#), "{dom}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_page_shows_changes_as_they_happen() {
    let running = testkit::Running::start().await;
    let http = common::read_side(&running, Duration::from_secs(5)).await;
    let customer = uuid::Uuid::new_v4().to_string();
    let mut reservations =
        ReservationServiceClient::new(running.commands_as(access::Role::Customer, &customer));
    reservations
        .apply_reservation(testkit::apply_request(&customer, 4_000))
        .await
        .unwrap();

    // The administrator's page (the summary is the company's), and the customer's, open.
    let mut company = browser::Browser::open(&format!("{http}/?login_hint=admin:admin-1")).await;
    let mut own = browser::Browser::open(&format!("{http}/?login_hint=customer:{customer}")).await;
    let rows = "document.querySelectorAll('tr.reservation').length";
    let live = "document.getElementById('state').textContent.includes('live')";
    for page in [&mut company, &mut own] {
        page.until(&format!("{rows} === 1 && {live}"), Duration::from_secs(20))
            .await;
    }
    company
        .until(
            "document.getElementById('counts').innerText.includes('1\\nrequested')",
            Duration::from_secs(10),
        )
        .await;

    // Applied through gRPC: the row appears on both pages, without a reload.
    let applied = reservations
        .apply_reservation(testkit::apply_request(&customer, 12_500))
        .await
        .unwrap()
        .into_inner();
    let row = format!("document.querySelector('tr[data-id=\"{}\"]')", applied.id);
    let mut waits = Vec::new();
    for page in [&mut company, &mut own] {
        waits.push(
            page.until(&format!("{row} !== null"), Duration::from_secs(10))
                .await,
        );
    }
    // Someone else's reservation reaches the company's page and not the customer's.
    let stranger = ReservationServiceClient::new(running.commands.clone())
        .apply_reservation(testkit::apply_request(
            &uuid::Uuid::new_v4().to_string(),
            9_900,
        ))
        .await
        .unwrap()
        .into_inner();
    let strangers_row = format!("document.querySelector('tr[data-id=\"{}\"]')", stranger.id);
    company
        .until(
            &format!("{strangers_row} !== null"),
            Duration::from_secs(10),
        )
        .await;

    // Cancelled: its status changes in place.
    let cancelled = reservations
        .cancel_reservation(CancelReservationRequest {
            request_id: String::new(),
            reservation_id: applied.id.clone(),
            reason: "moved".into(),
        })
        .await
        .unwrap()
        .into_inner();
    for page in [&mut company, &mut own] {
        waits.push(
            page.until(
                &format!("{row}?.querySelector('.status')?.textContent === 'cancelled'"),
                Duration::from_secs(10),
            )
            .await,
        );
    }
    company
        .until(
            "document.getElementById('counts').innerText.includes('1\\ncancelled') && document.querySelectorAll('#chart rect').length === 2",
            Duration::from_secs(10),
        )
        .await;
    // Well after the customer's page had its chance to show the stranger's row.
    let response = reqwest::Client::new()
        .get(format!(
            "{http}/dashboard?min_position={}",
            cancelled.position
        ))
        .bearer_auth(
            running
                .issuer
                .token(
                    &customer,
                    &[access::Role::Customer],
                    Duration::from_secs(60),
                )
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-read-model-consistent"], "true");
    assert_eq!(
        own.evaluate(&format!("{strangers_row} === null")).await,
        true
    );
    assert_eq!(own.evaluate(rows).await, 2);
    assert_eq!(
        own.evaluate("document.getElementById('summary').hidden")
            .await,
        true,
        "the summary is the company's"
    );
    eprintln!(
        "changes shown after (ms): {:?}",
        waits.iter().map(Duration::as_millis).collect::<Vec<_>>()
    );

    // LIVE_PAGE_SCREENSHOT=file.png keeps a picture of the company's live page (the README's).
    if let Ok(path) = std::env::var("LIVE_PAGE_SCREENSHOT") {
        std::fs::write(path, company.screenshot().await).unwrap();
    }
}
