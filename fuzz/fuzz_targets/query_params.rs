//! The query side's parameters, as a client may send them: any query string and any path
//! segment give a value or a problem, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use query_side::params::{id_from_path, Params};

fuzz_target!(|input: &str| {
    let accepted = ["status", "customer_id", "limit", "after", "min_position"];
    if let Ok(params) = Params::parse(Some(input), &accepted) {
        let _ = params.limit();
        let _ = params.after();
        let _ = params.uuid("customer_id");
        let _ = params.one_of("status", &["requested", "cancelled"]);
        let _ = params.text("min_position");
    }
    let _ = id_from_path("reservation_id", input);
});
