//! Model test of the watch hub: see `tests/support/watch_model.rs`.

#[path = "support/watch_model.rs"]
mod watch_model;

use proptest::prelude::*;
use watch_model::{run, Step};

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0u8..6).prop_map(Step::Put),
        2 => (0u8..6).prop_map(Step::Delete),
        1 => Just(Step::DeletePrefix),
        1 => Just(Step::Compact),
        6 => (0u8..4).prop_map(Step::Pop),
        2 => (0u8..8, any::<bool>(), 0u8..6)
            .prop_map(|(from_back, prefix, key)| Step::Watch { from_back, prefix, key }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn watchers_get_exactly_their_events(steps in prop::collection::vec(step(), 1..150)) {
        if let Err(e) = run(&steps) {
            return Err(TestCaseError::fail(e));
        }
    }
}
