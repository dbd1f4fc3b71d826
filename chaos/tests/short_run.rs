//! A short chaos run, seeded: the whole system as separate processes under load while 20
//! faults (kill -9, SIGTERM, SIGSTOP) hit every part of it, PostgreSQL and the event store
//! included; every invariant must hold. RELIABILITY.md has the long runs.
//!
//! It runs the service binaries cargo built beside this test's `chaos` binary (a workspace
//! test run builds them all).

use std::process::Command;

#[test]
fn twenty_faults_leave_every_invariant_holding() {
    let chaos = env!("CARGO_BIN_EXE_chaos");
    let output = Command::new(chaos)
        .args(["--seed", "7", "--faults", "20"])
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("chaos runs");
    let report = String::from_utf8_lossy(&output.stdout);
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "chaos found violations:\n{report}\n{errors}"
    );
    // One line per invariant, each holding, and the faults really happened.
    for invariant in [
        "acknowledged commands' events are in the log exactly once",
        "no event exists for a refused command",
        "every read model equals a fresh rebuild from the log, row by row",
        "every cancellation of a paid reservation is refunded exactly once",
        "no approved payment is left without its reservation or a refund",
        "each notification is sent exactly once per step",
        "a forgotten customer's data is erased everywhere",
        "idempotent retries returned the original answer",
    ] {
        assert!(
            report.contains(&format!("ok   {invariant}")),
            "missing or failed: {invariant}\n{report}"
        );
    }
    assert!(report.contains("20 faults in"), "{report}");
    assert!(report.contains("0 violations"), "{report}");
}
