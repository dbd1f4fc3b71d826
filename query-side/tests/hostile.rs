//! Hostile parameters: any query string and any path segment give a value or a problem (400 or
//! 422 naming the parameter), never a panic. The seeded, short version of the `query_params`
//! fuzz target (`fuzz/`; RELIABILITY.md has its long runs).

use proptest::prelude::*;
use query_side::params::{id_from_path, Params};

fn parse_anything(input: &str) {
    let accepted = ["status", "customer_id", "limit", "after", "min_position"];
    if let Ok(params) = Params::parse(Some(input), &accepted) {
        let _ = params.limit();
        let _ = params.after();
        let _ = params.uuid("customer_id");
        let _ = params.one_of("status", &["requested", "cancelled"]);
        let _ = params.text("min_position");
    }
    let _ = id_from_path("reservation_id", input);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2_000,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x9e_7a11),
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_text_is_a_value_or_a_problem(input: String) {
        parse_anything(&input);
    }

    #[test]
    fn query_shaped_text_is_a_value_or_a_problem(
        input in proptest::string::string_regex(r"([a-z_]{1,12}=[-0-9a-zA-Z%+._~]{0,40}&?){0,6}").unwrap()
    ) {
        parse_anything(&input);
    }
}
